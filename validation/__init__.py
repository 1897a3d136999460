"""Great Expectations suites for the raw tasks, labels, jobs and features, and the validate stage."""
