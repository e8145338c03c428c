"""Write examples/pendulum_runs.csv: three recordings of a swinging pendulum, as a camera
would give them — time, a run id, and the angle *wrapped* into (−π, π], at 100 Hz.

Independent of lagfit (scipy's DOP853 on θ̈ = −(g/l) sin θ, rtol 1e-12). g/l = 13.08 s⁻²;
one run goes over the top (its angle wraps), so the file needs ``data.unwrap=[q0]``:

    lagfit run system=custom 'system.lagrangian="0.5*m*l**2*qd**2 + m*g*l*cos(q)"' \\
        system.params="{m: null, l: null, g: null}" data=trajectory \\
        data.path=examples/pendulum_runs.csv data.columns="{q0: theta}" data.unwrap=[q0]

    python examples/make_pendulum_runs.py      # rewrites examples/pendulum_runs.csv
"""

from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

G_OVER_L = 13.08
STARTS = [(1.0, 0.0), (-0.4, 2.0), (0.0, 7.5)]  # (θ, θ̇): the last one goes over the top
t = np.arange(0, 4.0, 0.01)

rows = []
for run, state in enumerate(STARTS):
    sol = solve_ivp(lambda _, y: [y[1], -G_OVER_L * np.sin(y[0])], (t[0], t[-1]), state,
                    method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
    wrapped = np.angle(np.exp(1j * sol.y[0]))
    rows += [f"{x:.2f},{run},{a:.12f}" for x, a in zip(t, wrapped)]
out = Path(__file__).with_name("pendulum_runs.csv")
out.write_text("t,run,theta\n" + "\n".join(rows) + "\n")
print(f"wrote {out}: {len(STARTS)} runs × {t.size} samples, g/l = {G_OVER_L}")
