//! Built-in table of common cloud instance types: on-demand Linux hourly price and
//! vCPUs, so that $/core-hour = hourly / vCPUs. Each entry names its source and date;
//! prices drift, so users can always override the price per service.

use serde::Serialize;

/// One instance type of the table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// Provider's name for the type.
    pub name: &'static str,
    /// `AWS`, `GCP` or `Azure`.
    pub provider: &'static str,
    /// Region the price is for.
    pub region: &'static str,
    /// vCPUs of the type.
    pub vcpus: u32,
    /// On-demand Linux price, $ per hour.
    pub hourly_usd: f64,
    /// `x86_64` or `arm64`.
    pub arch: &'static str,
    /// Where the price was read.
    pub source: &'static str,
    /// When the price was read.
    pub date: &'static str,
}

impl InstanceType {
    /// $ per core-hour: hourly price / vCPUs.
    pub fn price_per_core_hour(&self) -> f64 {
        self.hourly_usd / self.vcpus as f64
    }

    /// The provider's published PUE (AWS 1.135, GCP 1.1, Azure 1.185).
    pub fn provider_pue(&self) -> f64 {
        match self.provider {
            "AWS" => 1.135,
            "GCP" => 1.1,
            "Azure" => 1.185,
            _ => super::PUE_OFF_CLOUD,
        }
    }
}

const AWS: &str = "aws.amazon.com/ec2/pricing/on-demand";
const GCP: &str = "cloud.google.com/compute/vm-instance-pricing";
const AZURE: &str = "azure.microsoft.com/pricing/details/virtual-machines/linux";
const DATE: &str = "2024-06";

macro_rules! it {
    ($name:expr, $prov:expr, $region:expr, $vcpus:expr, $usd:expr, $arch:expr, $src:expr) => {
        InstanceType {
            name: $name,
            provider: $prov,
            region: $region,
            vcpus: $vcpus,
            hourly_usd: $usd,
            arch: $arch,
            source: $src,
            date: DATE,
        }
    };
}

/// The table.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    it!("t3.medium", "AWS", "us-east-1", 2, 0.0416, "x86_64", AWS),
    it!("m5.large", "AWS", "us-east-1", 2, 0.096, "x86_64", AWS),
    it!("m5.xlarge", "AWS", "us-east-1", 4, 0.192, "x86_64", AWS),
    it!("m5.2xlarge", "AWS", "us-east-1", 8, 0.384, "x86_64", AWS),
    it!("m6i.large", "AWS", "us-east-1", 2, 0.096, "x86_64", AWS),
    it!("m6i.xlarge", "AWS", "us-east-1", 4, 0.192, "x86_64", AWS),
    it!("m7i.large", "AWS", "us-east-1", 2, 0.1008, "x86_64", AWS),
    it!("c5.large", "AWS", "us-east-1", 2, 0.085, "x86_64", AWS),
    it!("c5.xlarge", "AWS", "us-east-1", 4, 0.17, "x86_64", AWS),
    it!("c6i.xlarge", "AWS", "us-east-1", 4, 0.17, "x86_64", AWS),
    it!("r5.large", "AWS", "us-east-1", 2, 0.126, "x86_64", AWS),
    it!("r6i.xlarge", "AWS", "us-east-1", 4, 0.252, "x86_64", AWS),
    it!("m6g.large", "AWS", "us-east-1", 2, 0.077, "arm64", AWS),
    it!("m7g.large", "AWS", "us-east-1", 2, 0.0816, "arm64", AWS),
    it!("c6g.large", "AWS", "us-east-1", 2, 0.068, "arm64", AWS),
    it!("c7g.xlarge", "AWS", "us-east-1", 4, 0.145, "arm64", AWS),
    it!("e2-standard-2", "GCP", "us-central1", 2, 0.067006, "x86_64", GCP),
    it!("e2-standard-4", "GCP", "us-central1", 4, 0.134012, "x86_64", GCP),
    it!("n2-standard-2", "GCP", "us-central1", 2, 0.097118, "x86_64", GCP),
    it!("n2-standard-4", "GCP", "us-central1", 4, 0.194236, "x86_64", GCP),
    it!("c2-standard-4", "GCP", "us-central1", 4, 0.2088, "x86_64", GCP),
    it!("t2a-standard-2", "GCP", "us-central1", 2, 0.077, "arm64", GCP),
    it!("Standard_D2s_v5", "Azure", "eastus", 2, 0.096, "x86_64", AZURE),
    it!("Standard_D4s_v5", "Azure", "eastus", 4, 0.192, "x86_64", AZURE),
    it!("Standard_F2s_v2", "Azure", "eastus", 2, 0.0846, "x86_64", AZURE),
    it!("Standard_D2ps_v5", "Azure", "eastus", 2, 0.077, "arm64", AZURE),
];

/// The entry for `name` (case-insensitive), if the table has it.
pub fn lookup(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|i| i.name.eq_ignore_ascii_case(name.trim()))
}
