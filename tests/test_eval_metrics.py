"""The metric maths on toy data with known answers (no network, no MNIST)."""

import numpy as np
import pytest

from mnist_diffusion.evaluation import metrics as M


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ------------------------------------------------------------------------------ matrix sqrt / FID
def test_sqrtm_psd_known_case():
    # [[2,1],[1,2]] has eigenvalues 3 and 1 on (1,1)/sqrt2 and (1,-1)/sqrt2.
    r3 = np.sqrt(3.0)
    expected = np.array([[r3 + 1, r3 - 1], [r3 - 1, r3 + 1]]) / 2
    np.testing.assert_allclose(M.sqrtm_psd(np.array([[2.0, 1.0], [1.0, 2.0]])), expected, rtol=1e-12)
    np.testing.assert_allclose(M.sqrtm_psd(np.diag([4.0, 9.0, 0.0])), np.diag([2.0, 3.0, 0.0]), atol=1e-12)


def test_sqrtm_psd_squares_back_and_clips_roundoff():
    rng = np.random.default_rng(0)
    a = _spd(rng, 6)
    s = M.sqrtm_psd(a)
    np.testing.assert_allclose(s @ s, a, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s, s.T, atol=1e-12)
    # rank-deficient covariance with a tiny negative eigenvalue from round-off: no NaN
    v = rng.normal(size=(6, 2))
    assert np.isfinite(M.sqrtm_psd(v @ v.T - 1e-15 * np.eye(6))).all()


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    assert M.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(
        4 + 1
    )
    # diagonal covariances: sum of (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected)


def test_frechet_distance_matches_eigenvalues_of_product():
    rng = np.random.default_rng(1)
    s1, s2 = _spd(rng, 5), _spd(rng, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)); the product's eigenvalues are real and positive.
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(M.frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_fid_of_set_against_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 8))
    mu, sigma = M.feature_statistics(x)
    assert M.fid_from_features(x, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    fids = [M.fid_from_features(x + shift, mu, sigma) for shift in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(fids, fids[1:]))
    assert fids[-1] == pytest.approx(8 * 2.0**2, rel=1e-9)  # a pure shift adds |delta mu|^2


# ------------------------------------------------------------------------------------------ KID
def test_mmd2_unbiased_is_zero_in_expectation_for_equal_distributions():
    rng = np.random.default_rng(3)
    values = np.array([M.mmd2_unbiased(rng.normal(size=(100, 4)), rng.normal(size=(100, 4))) for _ in range(200)])
    standard_error = values.std() / np.sqrt(len(values))
    assert abs(values.mean()) < 3 * standard_error
    assert (values < 0).any()  # an unbiased estimator of 0 must go negative sometimes


def test_kid_separates_distributions_and_is_seeded():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(600, 4))
    same, shifted = rng.normal(size=(600, 4)), rng.normal(size=(600, 4)) + 0.5
    m_same, s_same, m = M.kernel_inception_distance(same, real, subsets=20, subset_size=200, seed=0)
    m_shift, _, _ = M.kernel_inception_distance(shifted, real, subsets=20, subset_size=200, seed=0)
    assert m == 200
    assert abs(m_same) < 3 * s_same + 1e-12
    assert m_shift > 10 * max(abs(m_same), s_same)
    assert M.kernel_inception_distance(same, real, 5, 100, seed=7) == M.kernel_inception_distance(
        same, real, 5, 100, seed=7
    )


def test_polynomial_kernel_formula():
    x, y = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    assert M.polynomial_kernel(x, y)[0, 0] == pytest.approx(((1 * 3 - 2 * 1) / 2 + 1) ** 3)


# -------------------------------------------------------------------------- precision / recall
def _modes(rng, centres, n):
    which = rng.integers(0, len(centres), n)
    return centres[which] + 0.3 * rng.normal(size=(n, centres.shape[1]))


def test_precision_recall_identical_sets():
    x = np.random.default_rng(5).normal(size=(300, 3))
    assert M.precision_recall(x, x) == (1.0, 1.0)


def test_precision_recall_same_distribution_high_disjoint_zero():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    p, r = M.precision_recall(fake, real)
    assert p > 0.85 and r > 0.85
    assert M.precision_recall(fake + 100.0, real) == (0.0, 0.0)


def test_precision_recall_half_the_modes():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 2)) * 10.0
    real = _modes(rng, centres, 1000)
    fake = _modes(rng, centres[:5], 1000)  # every sample realistic, half the modes never drawn
    p, r = M.precision_recall(fake, real)
    assert p > 0.9
    assert 0.3 < r < 0.7


def test_knn_radii_needs_more_than_k_points():
    with pytest.raises(ValueError):
        M.knn_radii(np.zeros((3, 2)), k=3)


# ---------------------------------------------------------------------------- classes / labels
def test_class_entropy_and_counts():
    assert M.class_entropy(np.full(10, 7)) == pytest.approx(np.log2(10))
    assert M.class_entropy(np.array([5, 0, 0])) == 0.0
    counts = M.class_counts(np.array([0, 0, 3, 9]))
    assert counts.tolist() == [2, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert M.label_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


# --------------------------------------------------------------------------------- memorisation
def test_nearest_neighbours_matches_brute_force_and_skips():
    rng = np.random.default_rng(8)
    base, queries = rng.random((300, 20)), rng.random((50, 20))
    d, idx = M.nearest_neighbours(queries, base, chunk=16)
    full = np.linalg.norm(queries[:, None] - base[None], axis=2)
    np.testing.assert_array_equal(idx, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-12)
    # queries drawn from base: without skip each finds itself, with skip the nearest other row
    rows = np.arange(10, 40)
    d0, i0 = M.nearest_neighbours(base[rows], base)
    assert (i0 == rows).all() and (d0 == 0).all()
    d1, i1 = M.nearest_neighbours(base[rows], base, skip=rows)
    assert (i1 != rows).all() and (d1 > 0).all()


def test_memorisation_flags_copies_not_fresh_samples():
    rng = np.random.default_rng(9)
    train = rng.random((400, 30))
    self_d, _ = M.nearest_neighbours(train, train, skip=np.arange(len(train)))
    copies = train[:100] + 0.01 * rng.normal(size=(100, 30))
    fresh = rng.random((100, 30))
    for samples, expected in ((copies, 1.0), (fresh, 0.0)):
        d, idx = M.nearest_neighbours(samples, train)
        report = M.memorisation(d, idx, self_d)
        assert report["copy_fraction"] == expected
    # an exact duplicate pair inside the training set (s_j = 0) must not produce NaN
    out = M.memorisation(np.array([0.0, 1.0]), np.array([0, 0]), np.array([0.0]))
    assert out["copy_fraction"] == 0.5
