"""Features known when a task is submitted, the same code at training and at serving time."""
