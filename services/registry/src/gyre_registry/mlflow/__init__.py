"""MLflow's model-registry REST API on Gyre's registry: ``filters`` (MLflow's search grammar),
``store`` (its SQL), ``handlers`` (the use cases, MLflow JSON in and out), ``api`` (the routes)."""
