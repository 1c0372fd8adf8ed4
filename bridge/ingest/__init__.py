"""Where studies come in: the C-STORE listener, the spool, study assembly."""
