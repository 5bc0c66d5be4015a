"""CLI and config plumbing, torch-free: where conf/ lives, override pre-checks, value
checks, and the rewriting of ``resume=…`` into the resumed run's overrides."""
