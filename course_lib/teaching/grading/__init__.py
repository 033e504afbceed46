"""The batch grader of Exercise 18.3 (``python -m course_lib.grade``): rubric, probe, execution, batch.

:mod:`.rubric` holds the points of every part; :mod:`.probe` runs inside a submission's kernel (the checks of
the learner's functions); :mod:`.execute` runs one submission in a fresh kernel with a time limit;
:mod:`.batch` grades a class, ``jobs`` at a time, into ``grades.csv``, feedback files and a summary.
"""
