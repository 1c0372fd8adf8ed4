"""Where studies leave: STOW-RS to the reading archive, and the signed case manifest."""
