"""Training path of oat_ros (plain torch, no ROS): demonstrations -> tokenizer -> AR policy ->
Blockwise tail, each a resumable, seeded CLI that ends in a native export.

    python -m oat_ros.train.demos          --data DIR_OR_HDF5... --out demos.npz   # optional cache
    python -m oat_ros.train.tokenizer_train --data demos.npz --out runs/tok
    python -m oat_ros.train.policy_train    --data demos.npz --tokenizer runs/tok/tokenizer --out runs/pol
    python -m oat_ros.train.tail_train      --data demos.npz --policy runs/pol/export --out runs/tail

Modules: demos (hdf5 reader, windows, normalizer fitting), presets (model/training sizes),
tokenizer_io (policy-independent tokenizer files), common (seeding, schedules, resumable
training state, progress), synthetic (fake demonstrations for tests and smoke runs).
"""
