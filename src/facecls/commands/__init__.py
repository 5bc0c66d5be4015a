"""One thin module per CLI command: the Hydra ``main(cfg)`` that reads the config, calls the
library and prints. Nothing heavy (torch, matplotlib) is imported at module level, so
``facecls <command> --help`` and config mistakes answer before torch loads."""
