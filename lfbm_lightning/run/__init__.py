"""Jobs: training, evaluation, evaluation after fit, their config checks, config tree,
summary and loggers."""
