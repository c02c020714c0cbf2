"""The columns of a runs table that are not settings: every metric, measure and status name, once.

A runs table holds one row per (run, epoch): the run's settings (one column per dotted key of the
config schema), then these. What each measure is: ssmpipe/measures.py.
"""

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
MEASURES = (
    "tau",
    "tau_max",
    "mc",
    "gram_cond",
    "s_A",
    "eig_real_min",
    "eig_real_max",
    "eig_imag_max",
    "output_scale",
    "grad_norm",
    "chance_acc",
    "dt",
    "rho_A",
    "S2",
)
PROFILES = ("mf",)  # measures that are a curve: a list column, null at epochs that do not measure it
LENGTH_METRICS = ("len_test_acc", "len_test_loss")  # one value per test_seq_lens entry, at the last epoch only
LAYER_MEASURES = ("tau_layers",)  # one value per layer (first layer first), every epoch; null where undefined
GRAM_SINGULAR = 1e16  # gram_cond's cap: κ from float64 singular values is noise beyond ~1/ε ≈ 4.5e15 (singular)

STATUSES = ("ok", "diverged", "failed")  # a run's status in a sweep
STOPPED = "stopped"  # a tune trial its scheduler stopped early (ssmpipe/tune/): its rows so far are kept
