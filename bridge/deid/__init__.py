"""De-identification: the PS3.15 Annex E profile table, its actions, UID and patient pseudonyms."""
