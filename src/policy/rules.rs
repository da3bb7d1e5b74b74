//! The rule table: every rule the engine can apply, with its stable id, its verdict, the voice prompt, the follow-up
//! actions and the message the operator reads. One line per rule, so a reviewer can hold it against DESIGN.md §4.

use serde::{Serialize, Serializer};

use crate::domain::Verdict;

/// A follow-up action the operator (or the community) must take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// 通知社区.
    NotifyCommunity,
    /// 集中隔离.
    CentralisedQuarantine,
    /// 居家隔离或核酸检测.
    HomeQuarantineOrTest,
    /// 引导至发热门诊.
    FeverClinic,
    /// 通知社区医生.
    NotifyCommunityDoctor,
    /// 休息片刻后复测.
    RestAndRemeasure,
    /// 重新测温.
    MeasureAgain,
    /// 测量体温.
    MeasureTemperature,
    /// 佩戴口罩.
    PutOnMask,
    /// 确认口罩.
    ConfirmMask,
    /// 登记身份信息.
    RegisterPerson,
    /// 重新出示健康码.
    RePresentCode,
    /// 出示健康码或通行证.
    PresentCode,
    /// 工作人员查看手机上的健康码颜色.
    OperatorCheckColour,
    /// 引导至集中收发点.
    DirectToDeliveryPoint,
    /// 门口交接.
    HandOverAtGate,
    /// 协调急救车辆.
    CoordinateEmergencyVehicle,
    /// 做好消毒.
    Disinfect,
    /// 安排健康监测.
    ArrangeHealthMonitoring,
    /// 工作人员审批（必要探访，登记事由）.
    OperatorApproveVisit,
    /// 登记返回.
    RegisterReturn,
    /// 核对服务名单.
    CheckServiceRoster,
    /// 核对车内人员.
    CheckOccupants,
    /// 登记车牌.
    RegisterPlate,
}

impl Action {
    /// What the operator reads for this action.
    pub fn zh(self) -> &'static str {
        match self {
            Action::NotifyCommunity => "通知社区",
            Action::CentralisedQuarantine => "集中隔离",
            Action::HomeQuarantineOrTest => "居家隔离或核酸检测",
            Action::FeverClinic => "引导至发热门诊",
            Action::NotifyCommunityDoctor => "通知社区医生",
            Action::RestAndRemeasure => "休息片刻后复测",
            Action::MeasureAgain => "重新测温",
            Action::MeasureTemperature => "测量体温",
            Action::PutOnMask => "佩戴口罩",
            Action::ConfirmMask => "确认已佩戴口罩",
            Action::RegisterPerson => "登记身份信息",
            Action::RePresentCode => "重新出示健康码",
            Action::PresentCode => "出示健康码或通行证",
            Action::OperatorCheckColour => "查看手机上的健康码颜色",
            Action::DirectToDeliveryPoint => "引导至集中收发点",
            Action::HandOverAtGate => "门口交接",
            Action::CoordinateEmergencyVehicle => "协调急救车辆",
            Action::Disinfect => "做好消毒",
            Action::ArrangeHealthMonitoring => "安排健康监测",
            Action::OperatorApproveVisit => "审批必要探访并登记事由",
            Action::RegisterReturn => "登记返回",
            Action::CheckServiceRoster => "核对服务保障名单",
            Action::CheckOccupants => "核对车内人员",
            Action::RegisterPlate => "登记车牌",
        }
    }
}

/// The voice prompt played at the gate; the key names a clip (see `hardware/` and the voice backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Voice {
    /// 请通行.
    Pass,
    /// 体温正常，请通行.
    PassNormal,
    /// 请出示健康码.
    ShowCode,
    /// 请测量体温.
    Measure,
    /// 体温异常，请复测.
    Remeasure,
    /// 请佩戴口罩.
    WearMask,
    /// 请稍候，工作人员正在处理.
    WaitForStaff,
    /// 禁止通行，请联系工作人员.
    Denied,
    /// 紧急通行.
    Emergency,
}

impl Voice {
    /// Every prompt (the set of clips the voice backend must provide).
    pub const ALL: [Voice; 9] = [
        Voice::Pass,
        Voice::PassNormal,
        Voice::ShowCode,
        Voice::Measure,
        Voice::Remeasure,
        Voice::WearMask,
        Voice::WaitForStaff,
        Voice::Denied,
        Voice::Emergency,
    ];

    /// The clip's file stem (`voice/<key>.wav`), stable.
    pub fn key(self) -> &'static str {
        match self {
            Voice::Pass => "pass",
            Voice::PassNormal => "pass_normal",
            Voice::ShowCode => "show_code",
            Voice::Measure => "measure",
            Voice::Remeasure => "remeasure",
            Voice::WearMask => "wear_mask",
            Voice::WaitForStaff => "wait_for_staff",
            Voice::Denied => "denied",
            Voice::Emergency => "emergency",
        }
    }

    /// The words spoken.
    pub fn zh(self) -> &'static str {
        match self {
            Voice::Pass => "请通行",
            Voice::PassNormal => "体温正常，请通行",
            Voice::ShowCode => "请出示健康码",
            Voice::Measure => "请测量体温",
            Voice::Remeasure => "体温异常，请复测",
            Voice::WearMask => "请佩戴口罩",
            Voice::WaitForStaff => "请稍候，工作人员正在处理",
            Voice::Denied => "禁止通行，请联系工作人员",
            Voice::Emergency => "紧急通行",
        }
    }
}

macro_rules! rule_table {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $verdict:ident, $voice:ident, [$($action:ident),*], $zh:literal; )*) => {
        /// A rule the engine applied. The id is stable: records, reports and outside checks rely on it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rule {
            $( $(#[$doc])* $variant, )*
        }

        impl Rule {
            /// Every rule, in table order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),*];

            /// The stable id (`code.red`, `tier.medium.visitor`...).
            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id,)* }
            }

            /// The verdict this rule gives.
            pub fn verdict(self) -> Verdict {
                match self { $(Rule::$variant => Verdict::$verdict,)* }
            }

            /// The voice prompt for this rule.
            pub fn voice(self) -> Voice {
                match self { $(Rule::$variant => Voice::$voice,)* }
            }

            /// Follow-up actions.
            pub fn actions(self) -> &'static [Action] {
                match self { $(Rule::$variant => &[$(Action::$action),*],)* }
            }

            /// The operator's message, in Simplified Chinese.
            pub fn message_zh(self) -> &'static str {
                match self { $(Rule::$variant => $zh,)* }
            }

            /// Look a rule up by its id.
            pub fn from_id(id: &str) -> Option<Rule> {
                match id { $($id => Some(Rule::$variant),)* _ => None }
            }
        }
    };
}

rule_table! {
    /// 1. Emergency lane: fever/acute patient to hospital, pregnant woman, ambulance.
    Emergency = "emergency", Pass, Emergency, [CoordinateEmergencyVehicle, Disinfect],
        "紧急通行：请协调急救车辆，通行后做好消毒";
    /// 2. No credential and no registration.
    IdentityUnknown = "identity.unknown", Refer, ShowCode, [RegisterPerson],
        "身份未确认：请出示健康码或通行证，或人工登记";
    /// 3. Codes.
    CodeRed = "code.red", Deny, Denied, [CentralisedQuarantine, NotifyCommunity],
        "红码：禁止通行，需集中隔离，请通知社区";
    CodeYellow = "code.yellow", Deny, Denied, [HomeQuarantineOrTest, NotifyCommunity],
        "黄码：禁止通行，需居家隔离或核酸检测，请通知社区";
    CodeExpired = "code.expired", Refer, ShowCode, [RePresentCode],
        "健康码已过期：请刷新后重新出示";
    CodeNotFound = "code.not_found", Refer, ShowCode, [RePresentCode],
        "未查询到该健康码：请重新出示";
    CodeFailed = "code.failed", Refer, ShowCode, [RePresentCode],
        "健康码核验失败：请重新出示";
    CodeTimeout = "code.timeout", Refer, WaitForStaff, [OperatorCheckColour],
        "健康码核验超时：请工作人员查看手机上的健康码颜色";
    CodeUnverified = "code.unverified", Refer, WaitForStaff, [OperatorCheckColour],
        "健康码未能联网核验：请工作人员查看手机上的健康码颜色";
    CodeMissing = "code.missing", Refer, ShowCode, [PresentCode],
        "未出示健康码：请出示健康码（居民可出示通行证）";
    /// 4. Temperature.
    TemperatureMissing = "temperature.missing", Refer, Measure, [MeasureTemperature],
        "未测体温：请测量体温";
    TemperatureStale = "temperature.stale", Refer, Measure, [MeasureAgain],
        "体温读数已超过60秒：请重新测量";
    TemperatureImplausible = "temperature.implausible", Refer, Measure, [MeasureAgain],
        "体温读数异常（不在34.0–42.5℃之间）：请重新测量";
    FeverFirst = "temperature.fever", Refer, Remeasure, [RestAndRemeasure],
        "体温偏高：请休息片刻后复测";
    FeverConfirmed = "temperature.fever_confirmed", Deny, Denied, [FeverClinic, NotifyCommunityDoctor],
        "复测体温仍偏高：禁止通行，请引导至发热门诊并通知社区医生";
    /// 5. Mask.
    MaskNotWorn = "mask.not_worn", Refer, WearMask, [PutOnMask],
        "未佩戴口罩：请佩戴口罩";
    MaskUnchecked = "mask.unchecked", Refer, WearMask, [ConfirmMask],
        "未确认口罩：请确认已佩戴口罩";
    /// 6. Home-quarantine list.
    QuarantineOut = "quarantine.out", Deny, Denied, [NotifyCommunity],
        "居家隔离人员：禁止外出，请通知社区";
    QuarantineIn = "quarantine.in", Refer, WaitForStaff, [RegisterReturn, NotifyCommunity],
        "居家隔离人员返回：请登记并通知社区";
    /// 7. Arrivals from risk areas and abroad (every tier).
    ArrivalRiskArea = "arrival.risk_area", Refer, WaitForStaff, [RegisterPerson, ArrangeHealthMonitoring],
        "来自中高风险地区：请登记并安排健康监测";
    ArrivalInbound = "arrival.inbound", Refer, WaitForStaff, [RegisterPerson, ArrangeHealthMonitoring],
        "入境人员：请登记并安排健康监测";
    /// Going out in low and medium tier.
    OutPass = "out.pass", Pass, Pass, [],
        "请通行";
    /// Tier × category (entering, and both directions in high tier).
    TierResident = "tier.resident", Pass, PassNormal, [],
        "居民：体温正常，请通行";
    TierHighResidentIn = "tier.high.resident.in", Refer, WaitForStaff, [RegisterReturn],
        "高风险管控：居民返回，请登记";
    TierHighResidentInApproved = "tier.high.resident.in.approved", Pass, PassNormal, [],
        "高风险管控：居民返回已登记，请通行";
    TierHighResidentOut = "tier.high.resident.out", Deny, Denied, [],
        "高风险管控：居民不得外出";
    TierLowVisitorRegistered = "tier.low.visitor.registered", Pass, PassNormal, [],
        "访客已登记：请通行";
    TierLowVisitorUnregistered = "tier.low.visitor.unregistered", Refer, WaitForStaff, [RegisterPerson],
        "访客：请先登记";
    TierMediumVisitor = "tier.medium.visitor", Refer, WaitForStaff, [OperatorApproveVisit],
        "中风险：仅限必要探访，请工作人员审批并登记事由";
    TierMediumVisitorApproved = "tier.medium.visitor.approved", Pass, PassNormal, [],
        "必要探访已审批：请通行";
    TierHighVisitor = "tier.high.visitor", Deny, Denied, [],
        "高风险管控：访客禁止进入";
    TierLowCourierRegistered = "tier.low.courier.registered", Pass, PassNormal, [],
        "快递外卖（已备案）：请通行";
    TierLowCourierVisitorRegistered = "tier.low.courier.as_visitor.registered", Pass, PassNormal, [],
        "快递外卖（按访客登记）：请通行";
    TierLowCourierUnregistered = "tier.low.courier.unregistered", Refer, WaitForStaff, [RegisterPerson],
        "快递外卖未备案：请按访客登记";
    TierMediumCourier = "tier.medium.courier", Deny, Denied, [DirectToDeliveryPoint],
        "中风险：快递外卖不得进入，请引导至集中收发点";
    TierHighCourier = "tier.high.courier", Deny, Denied, [HandOverAtGate],
        "高风险管控：快递外卖不得进入，请在门口交接";
    TierWorkResumption = "tier.work_resumption", Pass, PassNormal, [],
        "复工人员：请通行";
    TierHighWorkResumptionRostered = "tier.high.work_resumption.rostered", Pass, PassNormal, [],
        "高风险管控：服务保障名单人员，请通行";
    TierHighWorkResumption = "tier.high.work_resumption", Deny, Denied, [CheckServiceRoster],
        "高风险管控：复工人员不在服务保障名单，禁止通行";
    TierService = "tier.service", Pass, PassNormal, [],
        "工作人员：请通行";
    /// Vehicles.
    VehicleEmergency = "vehicle.emergency", Pass, Emergency, [CoordinateEmergencyVehicle, Disinfect],
        "紧急车辆：请放行，通行后做好消毒";
    VehicleNoOccupants = "vehicle.no_occupants", Refer, WaitForStaff, [CheckOccupants],
        "车辆：请逐一核验车内人员";
    VehiclePlateMissing = "vehicle.plate_missing", Refer, WaitForStaff, [RegisterPlate],
        "车辆：请登记车牌";
    VehicleOccupantDenied = "vehicle.occupant_denied", Deny, Denied, [CheckOccupants],
        "车辆：有车内人员禁止通行，车辆不得进入";
    VehicleCategoryNotAllowed = "vehicle.category_not_allowed", Deny, Denied, [],
        "车辆：当前风险等级不允许此类车辆通行";
    VehicleOccupantReferred = "vehicle.occupant_referred", Refer, WaitForStaff, [CheckOccupants],
        "车辆：有车内人员待处理";
    VehiclePass = "vehicle.pass", Pass, Pass, [],
        "车辆：全部人员核验通过，请通行";
    /// A presentation with nobody in it.
    NobodyPresented = "presentation.empty", Refer, WaitForStaff, [CheckOccupants],
        "未识别到人员：请重新核验";
}

impl Rule {
    /// True for refers an operator settles by approving (a registered return from quarantine, a registered arrival):
    /// the guidance asks the operator to act, not the person to produce something. The tier table's own approvals
    /// (a necessary visit, a return in high tier) have `.approved` rules of their own.
    pub fn approvable(self) -> bool {
        matches!(
            self,
            Rule::QuarantineIn
                | Rule::ArrivalRiskArea
                | Rule::ArrivalInbound
                | Rule::TierHighResidentIn
                | Rule::TierMediumVisitor
        )
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &r in Rule::ALL {
            assert!(seen.insert(r.id()), "duplicate id {}", r.id());
            assert_eq!(Rule::from_id(r.id()), Some(r));
            assert!(!r.message_zh().is_empty());
        }
        assert_eq!(Rule::from_id("no.such.rule"), None);
    }

    #[test]
    fn every_deny_and_refer_tells_the_person_why_out_loud() {
        for &r in Rule::ALL {
            match r.verdict() {
                Verdict::Deny => assert_eq!(r.voice(), Voice::Denied, "{}", r.id()),
                Verdict::Refer => {
                    assert!(!matches!(r.voice(), Voice::Pass | Voice::PassNormal | Voice::Denied), "{}", r.id())
                }
                Verdict::Pass => {}
            }
        }
    }
}
