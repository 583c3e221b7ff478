# Security groups: viewers reach the internal load balancer from the company's ranges only,
# encoders reach RTMP from theirs only, the load balancer alone reaches the front-ends, the
# monitoring ranges alone reach the admin ports. No group admits 0.0.0.0/0, and egress stays
# inside the VPC (EFS, the instances, and the VPC endpoints for S3, SSM, Auto Scaling and
# CloudWatch the closed network reaches AWS through).

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "livecast viewers: HTTPS from the company network"
  vpc_id      = var.vpc_id

  ingress {
    description = "viewers"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.company_cidrs
  }

  egress {
    description = "the front-ends"
    from_port   = 8081
    to_port     = 8081
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  egress {
    description = "the front-ends' readiness checks"
    from_port   = 9102
    to_port     = 9102
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "web" {
  name        = "${var.name}-web"
  description = "livecast front-ends"
  vpc_id      = var.vpc_id

  ingress {
    description     = "viewer requests from the load balancer"
    from_port       = 8081
    to_port         = 8081
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  ingress {
    description     = "readiness checks from the load balancer"
    from_port       = 9102
    to_port         = 9102
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  dynamic "ingress" {
    for_each = length(var.monitoring_cidrs) > 0 ? [1] : []
    content {
      description = "Prometheus"
      from_port   = 9102
      to_port     = 9102
      protocol    = "tcp"
      cidr_blocks = var.monitoring_cidrs
    }
  }

  egress {
    description = "EFS, the shipper and the VPC endpoints"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "ingest" {
  name        = "${var.name}-ingest"
  description = "livecast ingest"
  vpc_id      = var.vpc_id

  ingress {
    description = "RTMP from the encoders"
    from_port   = 1935
    to_port     = 1935
    protocol    = "tcp"
    cidr_blocks = var.encoder_cidrs
  }

  dynamic "ingress" {
    for_each = length(var.monitoring_cidrs) > 0 ? [1] : []
    content {
      description = "Prometheus"
      from_port   = 9101
      to_port     = 9101
      protocol    = "tcp"
      cidr_blocks = var.monitoring_cidrs
    }
  }

  egress {
    description = "EFS and the VPC endpoints"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "logship" {
  name        = "${var.name}-logship"
  description = "livecast log shipper"
  vpc_id      = var.vpc_id

  dynamic "ingress" {
    for_each = length(var.monitoring_cidrs) > 0 ? [1] : []
    content {
      description = "Prometheus"
      from_port   = 9104
      to_port     = 9104
      protocol    = "tcp"
      cidr_blocks = var.monitoring_cidrs
    }
  }

  egress {
    description = "EFS, Elasticsearch, Zabbix and the VPC endpoints"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "efs" {
  name        = "${var.name}-efs"
  description = "livecast shared HLS volume and access logs"
  vpc_id      = var.vpc_id

  ingress {
    description     = "NFS from the livecast instances"
    from_port       = 2049
    to_port         = 2049
    protocol        = "tcp"
    security_groups = [aws_security_group.web.id, aws_security_group.ingest.id, aws_security_group.logship.id]
  }
}
