"""Working with many runs: read run dirs (`runs`), compare them (`table`, `figures`),
summarise a sweep when it ends (`callback`) and record an Optuna study (`optuna_trials`)."""
