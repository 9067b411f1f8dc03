"""One thin module per DAG node: parse arguments, call `lightfer`, write the declared outputs.

`dvc.yaml` is the one description of the DAG (each stage's command, deps, params and
outputs); it runs a stage as `python -m stages.<module> --dataset <name> ...`, and the
Prefect flow calls the same module's `main(argv)` with that command's arguments. No stage
module imports another: what stages share lives in the library (`lightfer.stage` for the
entry point, `lightfer.catalog` for the paths).
"""
