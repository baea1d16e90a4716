# The two commands the README opens with; each sets itself up first.
PYTHON := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(CURDIR)/.venv/bin/python)

.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/run_demo.py

test: setup
	$(PYTHON) -m pytest -n auto tests
