"""Scaling out: a grid search on a Dask cluster through joblib (the `distributed` extra)."""

import numpy as np
import pytest
from conftest import SMALL
from sklearn.model_selection import GridSearchCV, KFold

from skunetseg import UNetSegmenter, dice_scorer

distributed = pytest.importorskip("distributed", reason="pip install skunetseg[distributed]")


@pytest.mark.slow
def test_grid_search_runs_on_a_dask_cluster_of_two_worker_processes(binary_data):
    import joblib

    X, y = binary_data
    search = GridSearchCV(UNetSegmenter(**SMALL, random_state=0),
                          param_grid={"learning_rate": [1e-2, 1e-3]}, cv=KFold(2),
                          scoring=dice_scorer, n_jobs=-1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, joblib.parallel_backend("dask"):
        search.fit(X, y)
        # the fits ran in the cluster's worker processes, not here
        assert len(client.scheduler_info()["workers"]) == 2
        assert sum(client.run(lambda: "tensorflow" in __import__("sys").modules).values()) >= 1
    scores = search.cv_results_["mean_test_score"]
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert search.predict(X).shape == y.shape
