"""Write examples/pendulum.csv: states of a simple pendulum and their angular accelerations.

Independent of lagfit (numpy only), so the example tests lagfit on data it did not make.

A pendulum of length l in gravity g has L = ½ m l² θ̇² + m g l cos θ, whose equation of
motion is θ̈ = −(g/l) sin θ (m drops out). g/l = 13.08 s⁻² here (e.g. g = 9.81 m/s²,
l = 0.75 m): not one of lagfit's built-in defaults. States are drawn uniformly from
|θ| ≤ 2.5 rad, |θ̇| ≤ 3 rad/s with a seeded generator, so the file is the same every time.

    python examples/make_pendulum.py            # rewrites examples/pendulum.csv
"""

from pathlib import Path

import numpy as np

G_OVER_L = 13.08  # 1/s², the value a fit should recover
N_ROWS = 400
SEED = 20250506

rng = np.random.default_rng(SEED)
theta = rng.uniform(-2.5, 2.5, N_ROWS)  # rad
omega = rng.uniform(-3.0, 3.0, N_ROWS)  # rad/s
alpha = -G_OVER_L * np.sin(theta)  # rad/s², the closed form

out = Path(__file__).with_name("pendulum.csv")
np.savetxt(out, np.column_stack([theta, omega, alpha]), delimiter=",", fmt="%.10f",
           header="theta,omega,alpha", comments="")
print(f"wrote {out}: {N_ROWS} rows, g/l = {G_OVER_L}")
