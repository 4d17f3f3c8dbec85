"""Guards on what goes into and comes out of a model: prompt-injection screening
(``injection``) and the system-prompt canary (``canary``). Pure Python, no Django."""
