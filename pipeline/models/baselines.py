"""The 13 scikit-learn baselines of the original Fashion-MNIST benchmark (Xiao et al. 2017), each at the
benchmark's best configuration, ported to scikit-learn 1.9 names: `Pipeline([StandardScaler(), classifier])` over
flattened rows in [0, 1], seeded wherever the estimator is random. The ports and deviations: docs/models.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# Keys every baseline hyperparameter dict may carry that are not estimator arguments.
NON_ESTIMATOR_KEYS = ("train_eval_samples",)


def _pipeline(clf) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()), ("clf", clf)])


def _kw(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hp.items() if k not in NON_ESTIMATOR_KEYS}


def svc(hp, seed):
    from sklearn.svm import SVC
    return _pipeline(SVC(random_state=seed, **_kw(hp)))


def gradient_boosting(hp, seed, *, exact: bool):
    kw = _kw(hp)
    if exact:
        from sklearn.ensemble import GradientBoostingClassifier
        return _pipeline(GradientBoostingClassifier(
            loss="log_loss", n_estimators=kw["n_estimators"], max_depth=kw["max_depth"],
            random_state=seed, verbose=1))
    from sklearn.ensemble import HistGradientBoostingClassifier
    # early_stopping off: the benchmark's GradientBoosting fits all n_estimators rounds, and so does its
    # stand-in (HGB would otherwise stop early by default on data this large). A port decision, not a knob.
    return _pipeline(HistGradientBoostingClassifier(
        max_iter=kw["n_estimators"], max_depth=kw["max_depth"],
        early_stopping=False, random_state=seed, verbose=1))


def random_forest(hp, seed):
    from sklearn.ensemble import RandomForestClassifier
    return _pipeline(RandomForestClassifier(random_state=seed, **_kw(hp)))


def mlp(hp, seed):
    from sklearn.neural_network import MLPClassifier
    kw = _kw(hp)
    kw["hidden_layer_sizes"] = tuple(kw["hidden_layer_sizes"])
    return _pipeline(MLPClassifier(random_state=seed, **kw))


def knn(hp, seed):
    from sklearn.neighbors import KNeighborsClassifier
    return _pipeline(KNeighborsClassifier(**_kw(hp)))


def logistic_regression(hp, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    kw = _kw(hp)
    n_jobs = kw.pop("n_jobs")  # parallelises over the 10 one-vs-rest problems, not inside liblinear
    return _pipeline(OneVsRestClassifier(LogisticRegression(random_state=seed, **kw), n_jobs=n_jobs))


def linear_svc(hp, seed):
    from sklearn.svm import LinearSVC
    return _pipeline(LinearSVC(random_state=seed, **_kw(hp)))


def sgd(hp, seed):
    from sklearn.linear_model import SGDClassifier
    return _pipeline(SGDClassifier(random_state=seed, **_kw(hp)))


def decision_tree(hp, seed):
    from sklearn.tree import DecisionTreeClassifier
    return _pipeline(DecisionTreeClassifier(random_state=seed, **_kw(hp)))


def perceptron(hp, seed):
    from sklearn.linear_model import Perceptron
    return _pipeline(Perceptron(random_state=seed, **_kw(hp)))


def passive_aggressive(hp, seed):
    # PassiveAggressiveClassifier(C) == SGDClassifier(loss='hinge', penalty=None, learning_rate='pa1', eta0=C)
    from sklearn.linear_model import SGDClassifier
    kw = _kw(hp)
    c = kw.pop("C")
    return _pipeline(SGDClassifier(loss="hinge", penalty=None, learning_rate="pa1", eta0=c,
                                   random_state=seed, **kw))


def extra_tree(hp, seed):
    from sklearn.tree import ExtraTreeClassifier
    return _pipeline(ExtraTreeClassifier(random_state=seed, **_kw(hp)))


def gaussian_nb(hp, seed):
    from sklearn.naive_bayes import GaussianNB
    kw = _kw(hp)
    if kw["priors"] is not None:  # null: priors from the training labels (params.yaml may say so)
        kw["priors"] = list(kw["priors"])
    return _pipeline(GaussianNB(**kw))


def param_count(model) -> int | None:
    """A sensible 'number of fitted parameters' of a fitted sklearn Pipeline, or None.

    Linear models / MLP / GaussianNB: coefficients + intercepts (+ per-class means, variances,
    priors); trees, forests and boosting: total tree nodes; SVC: support-vector values + dual
    coefficients + intercepts. KNN stores the training set and has no parameters: None.
    """
    clf = model[-1] if isinstance(model, Pipeline) else model

    def linear(est):
        n = 0
        for attr in ("coef_", "intercept_"):
            if hasattr(est, attr):
                n += int(np.size(getattr(est, attr)))
        return n or None

    name = type(clf).__name__
    if hasattr(clf, "estimators_") and name == "OneVsRestClassifier":
        counts = [linear(e) for e in clf.estimators_]
        return int(sum(c or 0 for c in counts)) or None
    if name in ("MLPClassifier",):
        return int(sum(w.size for w in clf.coefs_) + sum(b.size for b in clf.intercepts_))
    if name == "GaussianNB":
        return int(clf.theta_.size + clf.var_.size + clf.class_prior_.size)
    if hasattr(clf, "tree_"):
        return int(clf.tree_.node_count)
    if name in ("RandomForestClassifier", "GradientBoostingClassifier"):
        ests = np.ravel(clf.estimators_)
        return int(sum(e.tree_.node_count for e in ests))
    if name == "HistGradientBoostingClassifier":
        return int(sum(p.get_n_leaf_nodes() * 2 - 1 for it in clf._predictors for p in it))
    if name == "SVC":
        return int(clf.support_vectors_.size + clf.dual_coef_.size + clf.intercept_.size)
    if name == "KNeighborsClassifier":
        return None
    return linear(clf)
