"""Sans-io core: pure functions and state machines that take bytes and return
decisions. Nothing in here opens a socket, a file or a namespace, so all of it
is tested without root in milliseconds."""
