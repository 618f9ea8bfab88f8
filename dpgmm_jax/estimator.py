"""A scikit-learn estimator that releases a Gaussian mixture under (epsilon, delta)-DP.

``DPGaussianMixture`` wraps ``dpgmm_jax.release.release_gmm``: ``fit`` runs
the private mechanism once and stores the released mixture in data units,
and every other method (``predict``, ``score_samples``, ``sample``, ...) is
post-processing of that release, which costs no privacy budget.
"""

import logging
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from dpgmm_jax.accounting import NeighbouringRelation
from dpgmm_jax.algorithms import PRIVATE_STARTS, STARTS, ReleaseConfig
from dpgmm_jax.domain import Domain
from dpgmm_jax.em import log_prob, precision_cholesky, responsibilities
from dpgmm_jax.histogram import DEFAULT_HISTOGRAM_CELLS, check_release_grid
from dpgmm_jax.kl import sample as sample_mixture
from dpgmm_jax.release import auto_mode, check_labels, check_prior, fresh_key, release_gmm
from dpgmm_jax.types import GMMParams
from dpgmm_jax.validation import check_delta, check_epsilon, check_n_components

logger = logging.getLogger(__name__)

# In mode "labelled", ``fit`` passes its ``y`` to release_gmm as each record's component.
MODES = ("auto", "dp_em", "histogram_em", "labelled")
# Passed through to ReleaseConfig, whose own ALLOCATIONS decides what runs:
# a version without the optax solver raises for "optax" before any noise.
ALLOCATIONS = ("auto", "closed_form", "equal", "optax")
RELATIONS = tuple(relation.value for relation in NeighbouringRelation)


def check_finite_nonnegative(name: str, value, hint: str) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite real number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < np.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}; {hint}")


class DPGaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture with full covariances, released under (epsilon, delta)-DP.

    ``fit`` spends the whole privacy budget on one run of the release
    mechanism (``dpgmm_jax.release.release_gmm``). The fitted parameters are
    the published mixture: every other method only reads them, so calling
    ``predict``, ``score_samples`` or ``sample`` any number of times costs no
    further privacy.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.

    epsilon : float, default=1.0
        Privacy budget, finite and > 0.

    delta : float, default=1e-5
        Privacy parameter in (0, 1); choose it below 1/N for N records.

    bounds : tuple of (array-like of shape (n_features,), array-like of shape (n_features,)), default=None
        Public per-feature lower and upper bounds of the data domain, in data
        units. They must come from knowledge about the data source, never
        from the records. Give either ``bounds`` or ``centre`` and ``radius``.

    centre : array-like of shape (n_features,), default=None
        Centre of a public ball domain ``||x - centre|| <= radius``.

    radius : float, default=None
        Radius of the public ball domain, in data units.

    mode : {"auto", "dp_em", "histogram_em", "labelled"}, default="auto"
        Release algorithm. "auto" picks "histogram_em" where its grid
        fits (d <= 4 at the default ``histogram_cells``, and at least one
        cell per component) and no ``prior`` or private ``start`` is
        given, and "dp_em" otherwise. It reads only public values (d,
        ``n_components``, the settings), and the fitted ``mode_`` and
        ``privacy_["mode"]`` say which one ran. Where the default grid
        would fit but ``histogram_cells`` or ``n_components`` rule the
        histogram out, it warns before it runs "dp_em".
        "dp_em" runs ``max_iter`` iterations of
        differentially private EM from ``start`` (or from ``prior``).
        "histogram_em" releases one noisy histogram over a grid of the
        domain and fits the mixture to it by EM, as post-processing
        (``dpgmm_jax.histogram``). It needs at least 4 bins per axis, so
        d <= 4 at the default ``histogram_cells=256``, and there it is
        usually far more accurate than "dp_em". It ignores ``allocation``,
        ``max_iter``, ``last_share``, ``start``, ``start_share`` and
        ``noise_floor_factor``.
        "labelled" takes each record's component from the ``y`` passed to
        ``fit`` and releases once (after a pilot, unless a ``prior`` plans
        the split).

    allocation : {"auto", "closed_form", "equal", "optax"}, default="auto"
        How each release splits its budget across weights, means and
        covariances; passed to ``dpgmm_jax.algorithms.ReleaseConfig``.
        "closed_form" minimises a quadratic model of the expected KL.
        "optax" minimises a Monte Carlo estimate of the expected KL of the
        post-processed release (32 noise draws, 25 Adam steps); with ten
        DP-EM iterations it makes a fit one to two orders of magnitude
        slower. "auto" runs "optax" in mode "dp_em" after a "histogram_em"
        start and "closed_form" everywhere else.

    max_iter : int or None, default=None
        Number of DP-EM iterations T. Each iteration is one noisy release, and
        the budget is split across them, so more iterations mean more noise
        per iteration. None runs 1 iteration after a "histogram_em" start and
        10 after any other start.

    tol : float, default=1e-3
        Accepted for compatibility with ``sklearn.mixture.GaussianMixture``
        and not used. DP-EM runs exactly ``max_iter`` iterations because
        each one spends a planned share of the budget, and a stop on the
        change in log-likelihood would read the data outside the mechanism.

    last_share : float or None, default=0.5
        Share of the squared GDP budget mu^2 spent on the last DP-EM
        iteration, in (0, 1); the other iterations split the rest evenly.
        None splits mu^2 evenly over all iterations.

    start : {"auto", "data_independent", "histogram_em", "histogram", "kmeans"}, default="auto"
        How DP-EM starts. "data_independent" reads only public values.
        "histogram_em" spends ``start_share`` of mu^2 on a "histogram_em"
        release and starts from it. It needs the grid of that mode.
        "kmeans" spends it on three noisy Lloyd steps
        (``dpgmm_jax.algorithms.kmeans_start``), and "histogram" on a noisy
        histogram whose highest cells seed the means. The private starts are
        accounted with the iterations. "auto" is "histogram_em" where its
        grid fits and "data_independent" elsewhere. Mode "labelled" ignores
        it, and with a ``prior``, which is the start, it must be "auto" or
        "data_independent".

    start_share : float, default=0.1
        Share of mu^2 that a private start spends, in (0, 1).

    histogram_cells : int, default=256
        Target number of grid cells of mode "histogram_em" and of the
        histogram start; each axis gets floor(cells^(1/d)) bins.
        "histogram_em" needs at least 4 bins per axis and at most 2^16 cells.

    histogram_threshold : float, default=1.0
        Mode "histogram_em" drops cells whose noisy count is at most this
        many noise standard deviations, finite and >= 0. It always keeps the
        ``n_components`` highest cells.

    count_share : float, default=0.0
        Share of mu^2 that mode "histogram_em" spends on a noisy count of
        the records, from which it picks its grid in place of
        ``histogram_cells`` (``dpgmm_jax.histogram.bins_from_count``), in
        [0, 1). 0 keeps the fixed grid. Under "replace_one" N is public, so
        the count is exact and costs nothing.

    relation : {"add_or_remove_one", "replace_one"}, default="add_or_remove_one"
        Neighbouring relation of the guarantee. "replace_one" doubles every
        sensitivity.

    noise_floor_factor : float, default=0.5
        Factor kappa >= 0 of the noise-aware floor on released covariance
        eigenvalues (``dpgmm_jax.mechanism.postprocess``); 0 turns it off.

    random_state : int, numpy.random.RandomState, JAX PRNG key or None, default=None
        Source of the privacy noise and of ``sample``. None draws the noise
        from operating-system entropy. An int seeds ``jax.random.key(int)``,
        which makes releases reproducible: anyone who learns the seed can
        subtract the noise, so publish only releases fitted with None or a
        secret seed.

    accountant : object, default=None
        A privacy ledger with a method ``spend(epsilon, delta, description)``
        that records the spend or raises when the budget is exhausted.
        ``fit`` calls it after validating every parameter and before any
        noise is drawn. ``sklearn.base.clone`` shares the accountant with
        the clone instead of copying it, so clones spend from one ledger.

    prior : dpgmm_jax.PublicPrior or None, default=None
        A public mixture in data units with a public estimate of N, for
        example a model released earlier or fitted to public data, never to
        ``X``. The allocation is planned from it in place of the equal
        split: in mode "dp_em" it is also the start, and in mode "labelled"
        it replaces the pilot release. With a prior, "auto" runs "dp_em".

    Attributes
    ----------
    mode_ : str
        The release mode that ran: ``mode``, or what "auto" chose.

    weights_ : ndarray of shape (n_components,)
        Released mixture weights, on the probability simplex.

    means_ : ndarray of shape (n_components, n_features)
        Released component means, in data units.

    covariances_ : ndarray of shape (n_components, n_features, n_features)
        Released covariances, symmetric positive definite, in data units.

    precisions_cholesky_ : ndarray of shape (n_components, n_features, n_features)
        Upper-triangular P_k with ``inv(covariances_[k]) = P_k @ P_k.T``, as
        in ``sklearn.mixture.GaussianMixture``.

    converged_ : bool
        Always True after ``fit``: DP-EM has no convergence test and ran all
        of its planned iterations (see ``tol``). In mode "histogram_em" the
        EM fit to the noisy counts stops when its mean log-likelihood
        changes by less than 1e-9 or after 1,000 iterations, and which of
        the two ended it is not reported.

    n_iter_ : int
        Number of DP-EM iterations that ``fit`` ran (1 in mode
        "histogram_em"). ``privacy_["n_releases"]`` also counts the
        releases of a private start.

    n_features_in_ : int
        Number of features seen during ``fit``.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during ``fit``, defined only when ``X`` has
        string column names.

    domain_ : dpgmm_jax.domain.Domain
        The domain the release used.

    privacy_ : dict
        Privacy metadata of the release (``dpgmm_jax.release.privacy_metadata``):
        epsilon, delta, mu, neighbouring relation, mode, domain, versions and
        ``dp_guarantee``, which is False when the domain was derived from the
        data.

    See Also
    --------
    sklearn.mixture.GaussianMixture : The non-private estimator this one mirrors.

    Examples
    --------
    >>> import numpy as np
    >>> from dpgmm_jax import DPGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-2, 0.5, (500, 2)), rng.normal(2, 0.5, (500, 2))])
    >>> gmm = DPGaussianMixture(n_components=2, epsilon=1.0, delta=1e-5,
    ...                         bounds=([-4, -4], [4, 4]), random_state=0).fit(X)
    >>> gmm.means_.shape
    (2, 2)
    >>> gmm.privacy_["dp_guarantee"]
    True
    """

    def __init__(
        self,
        n_components=1,
        *,
        epsilon=1.0,
        delta=1e-5,
        bounds=None,
        centre=None,
        radius=None,
        mode="auto",
        allocation="auto",
        max_iter=None,
        tol=1e-3,
        last_share=0.5,
        start="auto",
        start_share=0.1,
        histogram_cells=DEFAULT_HISTOGRAM_CELLS,
        histogram_threshold=1.0,
        count_share=0.0,
        relation="add_or_remove_one",
        noise_floor_factor=0.5,
        random_state=None,
        accountant=None,
        prior=None,
    ):
        self.n_components = n_components
        self.epsilon = epsilon
        self.delta = delta
        self.bounds = bounds
        self.centre = centre
        self.radius = radius
        self.mode = mode
        self.allocation = allocation
        self.max_iter = max_iter
        self.tol = tol
        self.last_share = last_share
        self.start = start
        self.start_share = start_share
        self.histogram_cells = histogram_cells
        self.histogram_threshold = histogram_threshold
        self.count_share = count_share
        self.relation = relation
        self.noise_floor_factor = noise_floor_factor
        self.random_state = random_state
        self.accountant = accountant
        self.prior = prior

    def __sklearn_clone__(self):
        # The default clone deep-copies every parameter, which would give the
        # clone its own copy of the ledger, but clones must spend from one ledger.
        params = self.get_params(deep=False)
        accountant = params.pop("accountant")
        cloned_params = {name: clone(value, safe=False) for name, value in params.items()}
        return type(self)(**cloned_params, accountant=accountant)

    def _validate_params(self):
        """Check every parameter and return (epsilon, delta) as floats."""
        epsilon = check_epsilon(self.epsilon)
        delta = check_delta(self.delta)
        check_n_components(self.n_components)

        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got mode={self.mode!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got allocation={self.allocation!r}")
        if self.max_iter is not None and (
            isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1
        ):
            raise ValueError(
                f"max_iter must be an integer >= 1 or None, got max_iter={self.max_iter!r}; "
                "it is the number of DP-EM iterations, for example max_iter=10, and None picks it from the start"
            )
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not 0.0 <= self.tol < np.inf:
            raise ValueError(f"tol must be a finite number >= 0, got tol={self.tol!r}")

        has_ball = self.centre is not None or self.radius is not None
        if self.bounds is not None and has_ball:
            raise ValueError(
                "give the public domain either as bounds=(lower, upper) or as centre and radius, "
                f"not both; got bounds={self.bounds!r}, centre={self.centre!r}, radius={self.radius!r}"
            )
        if has_ball and (self.centre is None or self.radius is None):
            raise ValueError(
                "a ball domain needs both centre and radius, got "
                f"centre={self.centre!r}, radius={self.radius!r}"
            )
        if self.bounds is not None and (not isinstance(self.bounds, (tuple, list)) or len(self.bounds) != 2):
            raise ValueError(
                f"bounds must be a pair (lower, upper) of per-feature arrays, got bounds={self.bounds!r}"
            )
        if self.last_share is not None and (
            isinstance(self.last_share, bool)
            or not isinstance(self.last_share, numbers.Real)
            or not 0.0 < self.last_share < 1.0
        ):
            raise ValueError(
                f"last_share must be in (0, 1) or None, got last_share={self.last_share!r}; "
                "pass None to split the budget evenly over the iterations"
            )
        if self.start not in STARTS:
            raise ValueError(
                f"start must be one of {STARTS}, got start={self.start!r}; the default is 'auto'"
            )
        if (
            isinstance(self.start_share, bool)
            or not isinstance(self.start_share, numbers.Real)
            or not 0.0 < self.start_share < 1.0
        ):
            raise ValueError(
                f"start_share must be in (0, 1), got start_share={self.start_share!r}; for example start_share=0.1"
            )
        if (
            isinstance(self.histogram_cells, bool)
            or not isinstance(self.histogram_cells, numbers.Integral)
            or self.histogram_cells < 2
        ):
            raise ValueError(
                f"histogram_cells must be an integer >= 2, got histogram_cells={self.histogram_cells!r}; "
                "for example histogram_cells=256"
            )
        check_finite_nonnegative("histogram_threshold", self.histogram_threshold, "for example histogram_threshold=1.0")
        if (
            isinstance(self.count_share, bool)
            or not isinstance(self.count_share, numbers.Real)
            or not 0.0 <= self.count_share < 1.0
        ):
            raise ValueError(
                f"count_share must be in [0, 1), got count_share={self.count_share!r}; 0 keeps the fixed grid, "
                "for example count_share=0.05"
            )
        if self.prior is not None and self.mode == "histogram_em":
            raise ValueError("mode='histogram_em' splits no budget, so it takes no prior; drop prior or pick another mode")
        if self.prior is not None and self.mode in ("auto", "dp_em") and self.start in PRIVATE_STARTS:
            raise ValueError(
                f"start={self.start!r} has no role with a prior, because the prior is DP-EM's start. "
                "Drop prior or pass start='data_independent'"
            )
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got relation={self.relation!r}")
        check_finite_nonnegative(
            "noise_floor_factor", self.noise_floor_factor, "pass 0 to turn the noise-aware eigenvalue floor off"
        )
        if self.accountant is not None and not callable(getattr(self.accountant, "spend", None)):
            raise TypeError(
                "accountant must provide a method spend(epsilon, delta, description), "
                f"got accountant={self.accountant!r}; pass None to fit without a ledger"
            )
        return epsilon, delta

    def _resolve_mode(self, n_features: int) -> str:
        """Return the release mode that ``fit`` runs: ``mode`` itself, or the choice of "auto".

        "auto" reads public values only: the number of features, the number
        of components, ``histogram_cells``, ``prior`` and ``start``.
        """
        if self.mode != "auto":
            return self.mode
        config = ReleaseConfig(self.n_components, start=self.start, histogram_cells=int(self.histogram_cells))
        return auto_mode(n_features, config, self.prior is not None, stacklevel=4)

    def _domain(self, X) -> Domain:
        """Build the declared domain, or derive one from X with a PrivacyLeakWarning."""
        if self.bounds is not None:
            domain = Domain.from_bounds(*self.bounds)
        elif self.centre is not None:
            domain = Domain.from_ball(self.centre, self.radius)
        else:
            return Domain.from_data(X)

        if domain.n_features != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features but the declared domain has {domain.n_features}; "
                "give one bound, or one centre coordinate, per feature"
            )
        return domain

    def _key(self, stream: int) -> jax.Array:
        """Return the PRNG key of one random stream: 0 for the release, 1 for ``sample``.

        Stream 0 of an int seed s is ``jax.random.key(s)``, the key that
        ``release_gmm`` would be given directly.
        """
        state = self.random_state
        if state is None:
            return fresh_key()
        if isinstance(state, np.random.RandomState):
            # A RandomState advances on every call, as in scikit-learn.
            key = jax.random.key(int(state.randint(np.iinfo(np.int32).max)))
        elif isinstance(state, jax.Array) and jnp.issubdtype(state.dtype, jax.dtypes.prng_key):
            key = state
        elif isinstance(state, numbers.Integral) and not isinstance(state, bool) and state >= 0:
            key = jax.random.key(int(state))
        else:
            raise ValueError(
                "random_state must be None, an int >= 0, a numpy.random.RandomState or a JAX PRNG key, "
                f"got random_state={state!r}"
            )
        return key if stream == 0 else jax.random.fold_in(key, stream)

    def fit(self, X, y=None):
        """Release a Gaussian mixture of X under (epsilon, delta)-DP.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The private records. Records outside the domain are projected
            onto it.

        y : array-like of shape (n_samples,) or None
            Component label of each record, integers in [0, n_components),
            required in mode "labelled" and ignored in mode "dp_em".

        Returns
        -------
        self : DPGaussianMixture
            The fitted estimator.

        Raises
        ------
        ValueError, TypeError
            On an invalid parameter or input, before the accountant is
            charged and before any noise is drawn.
        """
        epsilon, delta = self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=1)
        domain = self._domain(X)
        key = self._key(stream=0)
        mode = self._resolve_mode(X.shape[1])
        labels = check_labels(y, X.shape[0], self.n_components) if mode == "labelled" else None
        if mode == "histogram_em":
            grid = ReleaseConfig(self.n_components, histogram_cells=int(self.histogram_cells),
                                 count_share=float(self.count_share))
            check_release_grid(X.shape[1], grid)
        if self.prior is not None:
            check_prior(self.prior, domain, self.n_components, X.dtype)

        if self.accountant is not None:
            iterations = "" if mode == "histogram_em" else f", max_iter={self.max_iter!r}"
            description = f"DPGaussianMixture.fit(mode={mode!r}, n_components={self.n_components}{iterations})"
            self.accountant.spend(epsilon, delta, description)

        params, metadata = release_gmm(
            X,
            epsilon=epsilon,
            delta=delta,
            domain=domain,
            n_components=self.n_components,
            mode=mode,
            key=key,
            labels=labels,
            prior=self.prior,
            n_iter=self.max_iter,
            last_share=None if self.last_share is None else float(self.last_share),
            allocation=self.allocation,
            relation=self.relation,
            noise_floor_factor=float(self.noise_floor_factor),
            start=self.start,
            start_share=float(self.start_share),
            histogram_cells=int(self.histogram_cells),
            histogram_threshold=float(self.histogram_threshold),
            count_share=float(self.count_share),
        )
        logger.info("released a %d-component mixture in mode %s", self.n_components, metadata["mode"])

        # Fitted arrays take X's dtype, as in scikit-learn, even where JAX computed in float32.
        # Renormalising after the cast keeps the weights on the simplex to the new precision.
        self.mode_ = mode
        weights = np.asarray(params.weights, dtype=X.dtype)
        self.weights_ = weights / np.sum(weights)
        self.means_ = np.asarray(params.means, dtype=X.dtype)
        self.covariances_ = np.asarray(params.covariances, dtype=X.dtype)
        self.precisions_cholesky_ = np.asarray(precision_cholesky(jnp.asarray(self.covariances_)), dtype=X.dtype)
        self.domain_ = domain
        self.privacy_ = metadata
        self.n_iter_ = int(metadata["n_iter"])
        self.converged_ = True
        return self

    def _centred(self, X):
        """Validate X and shift X and the released mixture by the domain centre.

        Log-densities are invariant under a common shift, and centring keeps
        the Mahalanobis terms well conditioned when the data sit far from
        the origin, as they do in data units.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        centre = self.domain_.centre
        params = GMMParams(
            jnp.asarray(self.weights_), jnp.asarray(self.means_ - centre), jnp.asarray(self.covariances_)
        )
        return jnp.asarray(X - centre.astype(X.dtype)), params

    def score_samples(self, X):
        """Compute the log-density of the released mixture at each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            log p(x) under the released mixture, in data units.
        """
        X, params = self._centred(X)
        return np.asarray(log_prob(X, params), dtype=self.means_.dtype)

    def score(self, X, y=None):
        """Compute the mean log-density of the released mixture over X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        log_likelihood : float
            Mean of ``score_samples(X)``.
        """
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Compute the posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            Responsibilities under the released mixture; each row sums to one.
        """
        X, params = self._centred(X)
        return np.asarray(responsibilities(X, params), dtype=self.means_.dtype)

    def predict(self, X):
        """Assign each sample to its most probable component.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Component indices, the argmax of ``predict_proba(X)``.
        """
        return np.argmax(self.predict_proba(X), axis=1)

    def sample(self, n_samples=1):
        """Draw synthetic samples from the released mixture.

        Sampling is post-processing of the release and costs no privacy
        budget. As in ``sklearn.mixture.GaussianMixture``, the samples are
        grouped by component.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples, >= 1.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The samples, in data units.

        y : ndarray of shape (n_samples,)
            The component each sample was drawn from.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got n_samples={n_samples!r}")

        key_labels, key_components = jax.random.split(self._key(stream=1))
        labels = np.asarray(
            jax.random.categorical(key_labels, jnp.log(jnp.asarray(self.weights_)), shape=(n_samples,))
        )
        counts = np.bincount(labels, minlength=self.n_components)

        # Each component is a one-component mixture for dpgmm_jax.kl.sample.
        blocks = []
        for k, key in enumerate(jax.random.split(key_components, self.n_components)):
            if counts[k]:
                means = jnp.asarray(self.means_[k : k + 1])
                component = GMMParams(jnp.ones(1, means.dtype), means, jnp.asarray(self.covariances_[k : k + 1]))
                blocks.append(np.asarray(sample_mixture(key, component, int(counts[k]))))
        return np.concatenate(blocks).astype(self.means_.dtype), np.repeat(np.arange(self.n_components), counts)

    def _n_parameters(self) -> int:
        """Return the number of free parameters of a full-covariance mixture."""
        n_features = self.means_.shape[1]
        covariance_parameters = self.n_components * n_features * (n_features + 1) // 2
        return covariance_parameters + self.n_components * n_features + self.n_components - 1

    def bic(self, X):
        """Compute the Bayesian information criterion of the release on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        Returns
        -------
        bic : float
            ``-2 log L + p log(n)`` for p free parameters; lower is better.
        """
        n_samples = np.shape(X)[0]
        return -2.0 * self.score(X) * n_samples + self._n_parameters() * np.log(n_samples)

    def aic(self, X):
        """Compute the Akaike information criterion of the release on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples in data units.

        Returns
        -------
        aic : float
            ``-2 log L + 2 p`` for p free parameters; lower is better.
        """
        return -2.0 * self.score(X) * np.shape(X)[0] + 2.0 * self._n_parameters()
