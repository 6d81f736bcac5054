from wms.cli.main import run

run()
