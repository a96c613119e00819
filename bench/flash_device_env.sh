# Source on the device machine: installs the carried wheels (.whl, and flash-attn-4 with its
# CuTe DSL compiler from .fa4b) into /tmp/site and exports PYTHONPATH.
#
# The compiler's CUDA 13 libraries (nvidia-cutlass-dsl-libs-cu13, 92 MB as a wheel) do not fit one
# call's 64 MiB, so they travel as an xz tarball of the wheel's contents split in two: the first
# part in one call, stashed in /tmp of the still-warm machine
# (mkdir -p /tmp/fa4stash && cp .fa4a/* /tmp/fa4stash/), the rest in .fa4b with the wheels.
# The pip install comes first: --target --upgrade replaces a top-level folder that the libraries
# share (nvidia_cutlass_dsl/) with the base wheels.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .fa4b/*.whl || return 1
cat /tmp/fa4stash/cu13.part.* .fa4b/cu13.part.* | xz -dc | tar -xf - -C /tmp/site || return 1
# What the package's .pth would add (PYTHONPATH folders do not read .pth files).
export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD
