"""Evolution strategies: the strategy (ask/tell), population evaluators and the run loop."""
