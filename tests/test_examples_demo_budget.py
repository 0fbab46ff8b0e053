"""The demo's time-budget plan: steps that fit, clipped, and a minimum that says it will not fit."""

from examples.stdlib import demo_budget as db


def test_plan_fits_the_budget_it_is_given():
    # 600 s budget, 40 s gone, 2 s steps: (600 - 40 - 20) / 2.8 = 192 -> 192 - 80 = 112 steps.
    steps, fits = db.plan_steps(600, 40, 2.0)
    assert (steps, fits) == (112, True)
    # The plan's own arithmetic keeps the run inside the budget (training + the reserve).
    assert 40 + steps * 2.0 * (1 + db.MARGIN) + db.RESERVE_STEPS * 2.0 * (1 + db.MARGIN) \
        + db.RESERVE_S <= 600


def test_plan_is_capped_on_fast_machines_and_floored_on_slow_ones():
    assert db.plan_steps(600, 20, 0.3) == (db.MAX_STEPS, True)  # the README's run
    assert db.plan_steps(600, 20, 0.3, max_steps=50) == (50, True)
    steps, fits = db.plan_steps(600, 100, 10.0)  # 10 s steps: 60 do not fit in 470 s
    assert (steps, fits) == (db.MIN_STEPS, False)


def test_cpu_line_names_a_matmul_kind():
    line = db.cpu_line()
    assert any(k in line for k in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "no AVX2"))
    assert "cores" in line
