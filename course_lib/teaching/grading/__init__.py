"""The batch grader of Exercise 18.3 (``python -m course_lib.grade``): execution, probe, rubric, batch.

- :mod:`.rubric`: the points of every part (the one place they are written) and how findings score;
- :mod:`.probe`: what runs inside a submission's kernel (a recorder around the trainer; the checks);
- :mod:`.execute`: one submission in a fresh kernel, in a temporary working copy, with a time limit;
- :mod:`.batch`: a class, ``jobs`` at a time: ``grades.csv``, feedback files and the summary.
"""

from .batch import grade_batch
from .rubric import PARTS, rubric_table

__all__ = ["PARTS", "grade_batch", "rubric_table"]
