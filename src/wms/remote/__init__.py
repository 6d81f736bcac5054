"""Training on the GPU instance over SSH (compute.backend = "ec2", compute.train_on = "instance").

`ssh` is the connection (paramiko), `package` builds and installs this checkout's wheel by its
hash, `job` is what runs on the instance, and `trainer` drives it from here: submit, follow
(reconnecting), stop, and collect the result.
"""
