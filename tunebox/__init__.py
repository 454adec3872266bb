"""tunebox: the code the job programs in jobs/ share, one subject per subpackage (README's Layout)."""
