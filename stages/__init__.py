"""One thin module per DAG node: read params, call `lightfer`, write the declared outputs.

`dvc.yaml` runs them as `python -m stages.<name> --dataset <name>`; the Prefect flow in
`pipeline/` calls the same `run` functions. Each module declares its dependencies, params
and outputs in a `StageSpec` so that a test can hold `dvc.yaml` and the flow to one DAG.
"""
