"""rpmcow: copy-on-write package installs for RPM/DNF systems.

Public API:
    rpmcow.transcode.transcode_path(in_path, out_path, algos=("SHA256",))
    rpmcow.transcode.transcode_fd(in_fd, out_fd, ...)
    rpmcow.extents.read_sections(fd)
    rpmcow.inspect.inspect_path(path)
"""
__version__ = "0.1.0"
