"""What the bridge is about, free of how it talks to anything: the vocabulary of a case
(subspecialties, priorities, agreement), the states a case goes through, and the one exception
tree. Every other layer may import from here; this package imports nothing of the bridge."""
