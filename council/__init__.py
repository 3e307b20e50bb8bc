"""council: answer questions through a council of small LoRA specialists that must agree, or abstain."""

import os

# No model hub at run time: a model that is not on disk must fail at once, not after ~47 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
