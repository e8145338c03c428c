from lagfit_cli.app.cli import entry_point

entry_point()
