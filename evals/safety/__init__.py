"""The platform's safety policy: offline rules and lexicons plus the PII detectors.

The public interface (the eval and the serving gateway use only this)::

    SafetyPolicy.screen_prompt(text, documents=()) -> Verdict
    SafetyPolicy.screen_output(text) -> Verdict
    SafetyPolicy.screen_document(text) -> Verdict
    Verdict.allowed / .blocked / .findings (Finding: rule, category, start, end,
    excerpt, source) / .categories / .to_dict()
    default_policy(), CATEGORIES
"""

from evals.safety.policy import Finding, SafetyPolicy, Verdict, default_policy
from evals.safety.rules import CATEGORIES

__all__ = ["CATEGORIES", "Finding", "SafetyPolicy", "Verdict", "default_policy"]
