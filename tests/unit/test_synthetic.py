from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ids import check_id
from registry.reference import hanoi_wards
from registry.synthetic import SeedPlan, SyntheticCity, checkpoints


def city(n: int, seed: int) -> list:
    return list(SyntheticCity(SeedPlan(residents=n, seed=seed, chunk=700)).chunks())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 2000))
def test_every_generated_resident_id_validates_against_their_own_dob_and_gender(
    seed: int, n: int
) -> None:
    chunks = city(n, seed)
    ids = [i for c in chunks for i in c.ids]
    assert len(ids) == n and len(set(ids)) == n
    for c in chunks:
        for pid, dob, gender in zip(c.ids, c.dob, c.gender, strict=True):
            result = check_id(pid, dob=dob, gender=gender)
            assert result.valid, (pid, dob, gender, result.errors)


def test_same_seed_same_city_and_real_wards() -> None:
    a, b = city(1500, 4), city(1500, 4)
    assert [c.ids for c in a] == [c.ids for c in b]
    assert [c.names for c in a] == [c.names for c in b]
    wards = {(w.district, w.name) for ws in hanoi_wards().values() for w in ws}
    assert all((d, w) in wards for c in a for d, w in zip(c.district, c.ward, strict=True))
    households = {h for c in a for h in c.household}
    assert len(households) < 1500  # people share households (and their addresses)


def test_checkpoints_scale_with_population() -> None:
    cps = checkpoints(SeedPlan(residents=200_000))
    assert len(cps) == 1000 and len({c.checkpoint_id for c in cps}) == 1000
    assert {c.type for c in cps} >= {"shop", "office", "market", "school", "hospital"}
