"""The batch grader of Exercise 18.3 (``python -m course_lib.grade``): rubric, probe, execute, batch."""
