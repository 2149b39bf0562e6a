//! DynamoDB numbers: decimals of up to 38 significant digits, magnitude
//! between 1E-130 and 1E126, normalized the way DynamoDB returns them
//! (`"1.50"` comes back as `"1.5"`).

use std::cmp::Ordering;
use std::fmt;

use crate::error::DynamoError;

const MAX_DIGITS: usize = 38;

/// A normalized decimal: `digits × 10^exp`, no leading or trailing zero digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    /// Decimal digits (0..=9), most significant first; empty for zero.
    digits: Vec<u8>,
    exp: i32,
}

fn not_a_number() -> DynamoError {
    DynamoError::Validation("A value provided cannot be converted into a number".into())
}

impl Number {
    /// Zero.
    pub fn zero() -> Number {
        Number {
            negative: false,
            digits: Vec::new(),
            exp: 0,
        }
    }

    /// An integer.
    pub fn from_i64(v: i64) -> Number {
        Number::parse(&v.to_string()).unwrap_or_else(|_| Number::zero())
    }

    /// Parses `[+-]digits[.digits][e[+-]digits]` and checks DynamoDB's limits.
    pub fn parse(s: &str) -> Result<Number, DynamoError> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            negative = b[i] == b'-';
            i += 1;
        }
        let mut digits = Vec::new();
        let mut exp: i64 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    seen_digit = true;
                    if !(digits.is_empty() && c == b'0') {
                        digits.push(c - b'0');
                    }
                    if seen_point {
                        exp -= 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
            if digits.len() > 1000 {
                return Err(not_a_number());
            }
        }
        if !seen_digit {
            return Err(not_a_number());
        }
        if i < b.len() {
            if b[i] != b'e' && b[i] != b'E' {
                return Err(not_a_number());
            }
            i += 1;
            let rest = &s[i..];
            if rest.is_empty() || rest.len() > 12 {
                return Err(not_a_number());
            }
            let e: i64 = rest.parse().map_err(|_| not_a_number())?;
            exp += e;
        }
        while digits.last() == Some(&0) {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            return Ok(Number::zero());
        }
        if digits.len() > MAX_DIGITS {
            return Err(DynamoError::Validation(
                "Attempting to store more than 38 significant digits in a Number".into(),
            ));
        }
        let magnitude = digits.len() as i64 + exp;
        if magnitude > 126 {
            return Err(DynamoError::Validation(
                "Number overflow. Attempting to store a number with magnitude larger than supported range".into(),
            ));
        }
        if magnitude < -129 {
            return Err(DynamoError::Validation(
                "Number underflow. Attempting to store a number with magnitude smaller than supported range".into(),
            ));
        }
        Ok(Number {
            negative,
            digits,
            exp: exp as i32,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    fn cmp_magnitude(&self, other: &Number) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let ma = self.digits.len() as i32 + self.exp;
        let mb = other.digits.len() as i32 + other.exp;
        ma.cmp(&mb).then_with(|| self.digits.cmp(&other.digits))
    }

    /// `self + other`, checked against DynamoDB's limits.
    pub fn add(&self, other: &Number) -> Result<Number, DynamoError> {
        if self.is_zero() {
            return Ok(other.clone());
        }
        if other.is_zero() {
            return Ok(self.clone());
        }
        let exp = self.exp.min(other.exp);
        // Little-endian digit vectors aligned at `exp`.
        let widen = |n: &Number| -> Vec<i32> {
            let mut v = vec![0i32; (n.exp - exp) as usize];
            v.extend(n.digits.iter().rev().map(|&d| i32::from(d)));
            v
        };
        let (a, b) = (widen(self), widen(other));
        let (big, small, negative) = if self.cmp_magnitude(other) == Ordering::Less {
            (&b, &a, other.negative)
        } else {
            (&a, &b, self.negative)
        };
        let subtract = self.negative != other.negative;
        let mut out = Vec::with_capacity(big.len() + 1);
        let mut carry = 0;
        for (i, x) in big.iter().enumerate() {
            let y = small.get(i).copied().unwrap_or(0);
            let mut d = if subtract {
                x - y + carry
            } else {
                x + y + carry
            };
            carry = 0;
            if d < 0 {
                d += 10;
                carry = -1;
            } else if d > 9 {
                d -= 10;
                carry = 1;
            }
            out.push(d);
        }
        if carry > 0 {
            out.push(carry);
        }
        let text: String = out
            .iter()
            .rev()
            .map(|d| char::from(b'0' + *d as u8))
            .collect();
        let sign = if negative { "-" } else { "" };
        Number::parse(&format!("{sign}{text}E{exp}"))
    }

    /// `-self`.
    pub fn negate(&self) -> Number {
        let mut n = self.clone();
        if !n.is_zero() {
            n.negative = !n.negative;
        }
        n
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        let sign = |n: &Number| {
            if n.is_zero() {
                0
            } else if n.negative {
                -1
            } else {
                1
            }
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal if self.negative => other.cmp_magnitude(self),
            Ordering::Equal => self.cmp_magnitude(other),
            o => o,
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let digits: String = self.digits.iter().map(|d| char::from(b'0' + d)).collect();
        if self.exp >= 0 {
            f.write_str(&digits)?;
            for _ in 0..self.exp {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let point = digits.len() as i32 + self.exp;
        if point > 0 {
            let (int, frac) = digits.split_at(point as usize);
            write!(f, "{int}.{frac}")
        } else {
            f.write_str("0.")?;
            for _ in 0..(-point) {
                f.write_str("0")?;
            }
            f.write_str(&digits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn normalizes_like_dynamodb() {
        for (input, out) in [
            ("1.50", "1.5"),
            ("001", "1"),
            ("-0", "0"),
            ("1E2", "100"),
            ("1.2e-3", "0.0012"),
            ("+7", "7"),
            ("-12.3400", "-12.34"),
            ("0.000", "0"),
        ] {
            assert_eq!(n(input).to_string(), out, "{input}");
        }
        for bad in [
            "", "-", "abc", "1.2.3", "1e", "1e+", " 1", "1 ", "0x10", "1E127", "1E-131",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Number::parse(&"1".repeat(39)).is_err());
        assert!(Number::parse(&"1".repeat(38)).is_ok());
    }

    #[test]
    fn orders_and_adds() {
        let mut v = [n("10"), n("-2"), n("0"), n("9.99"), n("-10.5"), n("0.001")];
        v.sort();
        let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(s, ["-10.5", "-2", "0", "0.001", "9.99", "10"]);
        assert_eq!(n("1.0"), n("1"));
        for (a, b, sum) in [
            ("1", "1", "2"),
            ("9.99", "0.01", "10"),
            ("-5", "3", "-2"),
            ("3", "-5", "-2"),
            ("0.5", "-0.5", "0"),
            ("100", "-0.001", "99.999"),
            ("-1", "-1", "-2"),
        ] {
            assert_eq!(n(a).add(&n(b)).unwrap().to_string(), sum, "{a} + {b}");
        }
    }
}
