//! Shrinking a failing scenario: delta debugging over its steps and its initial tree, then one
//! element at a time, until no single removal keeps the failure.

use super::scenario::{Scenario, Step};

/// The smallest scenario found that still `fails`.
pub fn shrink(sc: &Scenario, fails: impl Fn(&Scenario) -> bool) -> Scenario {
    let mut best = sc.clone();
    loop {
        let before = (best.steps.len(), best.initial.len(), best.devices);
        let steps = ddmin(best.steps.clone(), |steps| {
            fails(&Scenario {
                steps: steps.to_vec(),
                ..best.clone()
            })
        });
        best.steps = steps;
        let initial = ddmin(best.initial.clone(), |initial| {
            fails(&Scenario {
                initial: initial.to_vec(),
                ..best.clone()
            })
        });
        best.initial = initial;
        // A device no step names any more may go (the highest one, so names stay put).
        let top = best.devices - 1;
        if best.devices > 2 && best.steps.iter().all(|s| device_of(s) != top) {
            let fewer = Scenario {
                devices: top,
                ..best.clone()
            };
            if fails(&fewer) {
                best = fewer;
            }
        }
        if (best.steps.len(), best.initial.len(), best.devices) == before {
            return best;
        }
    }
}

fn device_of(s: &Step) -> usize {
    match s {
        Step::User(d, _) | Step::Plan(d) | Step::Push(d) | Step::Pull(d) => *d,
    }
}

/// Zeller's ddmin (complements only), finished by single removals to a 1-minimal list.
fn ddmin<T: Clone>(mut items: Vec<T>, fails: impl Fn(&[T]) -> bool) -> Vec<T> {
    let mut n = 2;
    while items.len() >= 2 {
        let chunk = items.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..items.len()).step_by(chunk) {
            let mut rest = items[..start].to_vec();
            rest.extend_from_slice(&items[(start + chunk).min(items.len())..]);
            if fails(&rest) {
                items = rest;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= items.len() {
                break;
            }
            n = (2 * n).min(items.len());
        }
    }
    let mut i = 0;
    while i < items.len() {
        let mut rest = items.clone();
        rest.remove(i);
        if fails(&rest) {
            items = rest;
        } else {
            i += 1;
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::ddmin;

    #[test]
    fn ddmin_finds_the_two_elements_that_matter() {
        let items: Vec<u32> = (0..40).collect();
        let min = ddmin(items, |xs| xs.contains(&7) && xs.contains(&31));
        assert_eq!(min, vec![7, 31]);
    }
}
