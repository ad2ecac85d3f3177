"""I/O shell: namespaces, TUN devices, the supervisor's epoll loop, processes
and the control channel. It moves bytes and asks :mod:`..core` what to do."""
