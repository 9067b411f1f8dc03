"""Training: batches from the face cache (`data`), the epoch loop with checkpoints and exact
resume (`loop`), and soft labels from a frozen LDG (`soft_labels`)."""
