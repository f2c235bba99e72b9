"""The one MLflow compatibility layer tracking and the registry share (docs/mlflow.md, "One MLflow layer").

* :mod:`~gyre_common.mlflow.gateway`: the ASGI gateway answering MLflow's REST paths from a dict;
* :mod:`~gyre_common.mlflow.errors`: Gyre errors <-> MLflow's error codes and HTTP statuses;
* :mod:`~gyre_common.mlflow.fields`: the request reader (JSON body or query, checked);
* :mod:`~gyre_common.mlflow.search`: the filter / order_by grammar with per-service dialects;
* :mod:`~gyre_common.mlflow.search_sql`: filters as SQL through a service's column map.

Nothing is imported here, so that a service's domain can use the grammar without the web stack.
"""
