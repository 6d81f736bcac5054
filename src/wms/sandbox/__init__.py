"""Image decoding kept apart from the credentials of the process that asks for it.

The files WMS decodes come from people it does not control: pushed pairs, labelling batches,
photos kept by the service. A flaw in a C decoder (libjpeg, libpng, libwebp, libtiff) that such a
file triggers runs its code with whatever the decoding process holds: on a runner the job's
secrets, on the GPU instance and the serving node their AWS role. So `wms.sandbox.images` hands the
bytes to a child process (`wms.sandbox.child`) that starts with an empty environment, confines
itself with a seccomp filter (no files, no sockets, no programs), decodes, and sends back raw
pixels that the parent checks before it builds a Pillow image from them.
"""

from typing import Literal

# Where such files are decoded (`data.decode_sandbox`): wms.sandbox.images.configure says what each means.
DecodeSandbox = Literal["auto", "required", "off"]
