# Least privilege. An instance may read the release, answer its own group's lifecycle actions
# (the calls deploy/aws/ansible makes, and no other Auto Scaling call), and be managed by SSM;
# the shipper may also write the archive and publish the viewer metric. The automation may
# run the playbook document on livecast instances and answer with the default on failure;
# EventBridge may only start that automation.

locals {
  account = data.aws_caller_identity.current.account_id
  arn     = "arn:${data.aws_partition.current.partition}"
  # By name, not by resource: the launch templates need the roles before the groups exist.
  group_arn = { for role in keys(local.roles) : role =>
  "${local.arn}:autoscaling:${var.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}-${role}" }
  # The Auto Scaling calls each role's playbooks make (launch.yml, terminate.yml).
  lifecycle_actions = {
    web     = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    ingest  = ["autoscaling:CompleteLifecycleAction"]
    logship = ["autoscaling:CompleteLifecycleAction"]
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "role" {
  for_each           = local.roles
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  for_each   = local.roles
  role       = aws_iam_role.role[each.key].name
  policy_arn = "${local.arn}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "role" {
  for_each = local.roles

  statement {
    sid       = "release"
    actions   = ["s3:GetObject"]
    resources = ["${local.arn}:s3:::${var.release_bucket}/livecast-*"]
  }

  statement {
    sid       = "version"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.release.arn]
  }

  statement {
    sid       = "lifecycle"
    actions   = local.lifecycle_actions[each.key]
    resources = [local.group_arn[each.key]]
  }

  dynamic "statement" {
    for_each = each.key == "logship" ? [1] : []
    content {
      sid       = "archive"
      actions   = ["s3:PutObject", "s3:GetObject"]
      resources = ["${aws_s3_bucket.archive.arn}/access/*"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "logship" ? [1] : []
    content {
      sid       = "archivekey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [aws_kms_key.livecast.arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "logship" ? [1] : []
    content {
      sid       = "viewers"
      actions   = ["cloudwatch:PutMetricData"]
      resources = ["*"]
      condition {
        test     = "StringEquals"
        variable = "cloudwatch:namespace"
        values   = ["Livecast"]
      }
    }
  }
}

resource "aws_iam_role_policy" "role" {
  for_each = local.roles
  name     = "livecast"
  role     = aws_iam_role.role[each.key].id
  policy   = data.aws_iam_policy_document.role[each.key].json
}

resource "aws_iam_instance_profile" "role" {
  for_each = local.roles
  name     = "${var.name}-${each.key}"
  role     = aws_iam_role.role[each.key].name
}

# The SSM Automation that runs the playbook.
data "aws_iam_policy_document" "ssm_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ssm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "automation" {
  name               = "${var.name}-lifecycle-automation"
  assume_role_policy = data.aws_iam_policy_document.ssm_assume.json
}

data "aws_iam_policy_document" "automation" {
  statement {
    sid       = "document"
    actions   = ["ssm:SendCommand"]
    resources = [aws_ssm_document.playbook.arn]
  }

  statement {
    sid       = "instances"
    actions   = ["ssm:SendCommand"]
    resources = ["${local.arn}:ec2:${var.region}:${local.account}:instance/*"]
    condition {
      test     = "StringLike"
      variable = "ssm:resourceTag/livecast:role"
      values   = ["*"]
    }
  }

  statement {
    sid       = "follow"
    actions   = ["ssm:ListCommands", "ssm:ListCommandInvocations", "ssm:GetCommandInvocation", "ssm:DescribeInstanceInformation"]
    resources = ["*"]
  }

  statement {
    sid       = "default"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = values(local.group_arn)
  }
}

resource "aws_iam_role_policy" "automation" {
  name   = "livecast"
  role   = aws_iam_role.automation.id
  policy = data.aws_iam_policy_document.automation.json
}

# EventBridge starting the automation.
data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "events" {
  name               = "${var.name}-lifecycle-events"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "events" {
  statement {
    sid       = "start"
    actions   = ["ssm:StartAutomationExecution"]
    resources = ["${local.arn}:ssm:${var.region}:${local.account}:automation-definition/${aws_ssm_document.lifecycle.name}:*"]
  }

  statement {
    sid       = "pass"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.automation.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ssm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "events" {
  name   = "livecast"
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events.json
}
