"""What every use of a trained model shares: reading checkpoints, rebuilding a run, scoring a
split (evaluate, metrics, per-class files), and the device and precision it runs in.

training/ writes checkpoints and uses these too; inspect/ and the inference commands (eval,
predict, and the open-set and serving commands) use them without ever importing training/.
"""
