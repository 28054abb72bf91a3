# `make verify` runs exactly what CI runs.
.PHONY: verify test run
verify test:
	bash scripts/test.sh
run:
	bash scripts/run.sh
