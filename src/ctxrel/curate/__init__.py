"""Curation of finetuning data: context-only / keyword / perplexity-without-context filters, the C / C+S / S
classifier, counterfactual augmentation and entity substitution with a leak report (docs/design.md, 'Parts')."""
