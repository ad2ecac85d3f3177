"""Small programs to try the sandbox with: ``netplay run`` them in two hosts."""
