"""``wellread recipe``: the paper's recipe end to end, each stage a run directory, then a report.

Stages, in order, each ``OUT/<name>/``: ``data`` (GLUE; a seeded sample of the training sets when the
budget asks) → ``vocab`` (the standard uncased vocabulary, or one learned from the text) → ``corpus``
(token shards) → ``pretrain-<student>`` (MLM) → ``teacher-<task>`` (all-MiniLM-L6-v2 fine-tuned) →
``grid-random-…`` / ``grid-pretrained-…`` (the paper's grid from random init and from the pre-trained
student) → ``distill-…`` (Pre-trained Distillation into the pre-trained student, then fine-tuning)
→ ``evaluate`` (every arm's best model re-scored on dev) → ``report``.

A finished stage is recorded in ``OUT/stages/<name>.json`` with its settings (which include the
settings of the stages it reads from): a re-run skips it. An unfinished one is run again, and
resumes, because every stage is made of idempotent run directories (a finished run returns its
results, a killed one continues from its checkpoint). A stage whose settings changed is redone from
scratch. ``OUT/plan.json`` holds the budget's plan (``wellread.recipe.budget``), reused while the recipe's
settings and data stay the same, so a re-run makes the same decisions.

Modules: ``config`` (the settings), ``sources`` (where the data is), ``online`` (whether the hub answers),
``budget`` (the plan), ``runner`` (done markers, worker processes), ``stages`` (the stages and ``run_recipe``).
"""
