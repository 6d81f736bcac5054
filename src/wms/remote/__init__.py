"""Training on the GPU instance over SSH (compute.backend = "ec2", compute.train_on = "instance").

`ssh` is the connection (paramiko), `package` builds and installs this checkout's wheel by its
hash, `job` is what runs on the instance, `trainer` drives it from here (submit, follow with
reconnects, stop, collect), `reclaim` starts an instance stopped under its job (a spot reclaim)
again and resumes the job from its checkpoint, and `entry` is how the pipeline and `wms train`
get there.
"""
